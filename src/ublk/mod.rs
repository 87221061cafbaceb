//! ublk: the kernel's io_uring userspace block driver (`ublk_drv`, Linux
//! 6.x) as a second transport besides NBD (docs/ublk.md).
//!
//! * [`proto`]: the driver's structures and command numbers
//!   (`linux/ublk_cmd.h`), encoded and decoded in safe code;
//! * [`handle`]: one request against the stack's top layer;
//! * the rings and shared memory live in `crate::sys::ioctl::ublk`, the
//!   device's life (add, queues, start, stop, delete) in
//!   `crate::serve::ublk`.

pub mod proto;

use std::io;

use crate::blockdev::{check_range, BlockDev};
use crate::nbd::transmission::nbd_errno;
use proto::{IoDesc, Op};

const SECTOR: u64 = 512;
const EINVAL: i32 = 22;
/// What a queue answers when it cannot serve a request at all.
pub const EIO: i32 = 5;
const EOPNOTSUPP: i32 = 95;

fn errno(e: &io::Error) -> i32 {
    // The NBD error set is Linux errno values; the same mapping serves.
    -(nbd_errno(e) as i32)
}

/// Serves one request `d` with `buf` (the tag's buffer: the data of a
/// write, the place for a read) against `dev`. Returns what the kernel
/// is told: the bytes done, or a negative errno. A request outside the
/// device or larger than the buffer is `-EINVAL`, never a panic.
pub fn handle(dev: &dyn BlockDev, d: &IoDesc, buf: &mut [u8]) -> i32 {
    let done = match d.op {
        // A flush has no range: the block layer leaves its sector at -1.
        Op::Flush => dev.flush(),
        Op::Other(_) => return -EOPNOTSUPP,
        Op::Read | Op::Write | Op::Discard | Op::WriteZeroes => {
            let Some(offset) = d.start_sector.checked_mul(SECTOR) else { return -EINVAL };
            let len = u64::from(d.nr_sectors) * SECTOR;
            let data_op = matches!(d.op, Op::Read | Op::Write);
            if check_range(dev.size(), offset, len).is_err() || (data_op && len > buf.len() as u64) {
                return -EINVAL;
            }
            let n = len as usize;
            let done = match d.op {
                Op::Read => dev.read_at(&mut buf[..n], offset),
                Op::Write => {
                    dev.write_at(&buf[..n], offset).and_then(|()| if d.fua { dev.flush() } else { Ok(()) })
                }
                Op::Discard => dev.trim(offset, len),
                _ => dev.write_zeroes(offset, len),
            };
            // A request is at most the buffer (a few MiB), so it fits.
            match done {
                Ok(()) if data_op => return n as i32,
                other => other,
            }
        }
    };
    match done {
        Ok(()) => 0,
        Err(e) => errno(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::{MemDev, ReadOnly};

    fn desc(op: Op, start_sector: u64, nr_sectors: u32) -> IoDesc {
        IoDesc { op, fua: false, nr_sectors, start_sector }
    }

    #[test]
    fn reads_writes_and_refuses_what_is_out_of_range() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let dev = MemDev::new(data.clone());
        let mut buf = vec![0u8; 2048];
        assert_eq!(handle(&dev, &desc(Op::Read, 2, 2), &mut buf), 1024);
        assert_eq!(&buf[..1024], &data[1024..2048]);
        buf[..512].fill(7);
        assert_eq!(handle(&dev, &IoDesc { fua: true, ..desc(Op::Write, 7, 1) }, &mut buf), 512);
        assert_eq!(&dev.snapshot()[3584..], &[7u8; 512][..]);
        assert_eq!(handle(&dev, &desc(Op::Flush, 0, 0), &mut buf), 0);
        // What the kernel sends for a flush: sector -1, no sectors.
        assert_eq!(handle(&dev, &desc(Op::Flush, u64::MAX, 0), &mut buf), 0);
        assert_eq!(handle(&dev, &desc(Op::WriteZeroes, 0, 1), &mut buf), 0);
        assert_eq!(&dev.snapshot()[..512], &[0u8; 512][..]);
        // Past the end, overflowing, larger than the buffer, unknown.
        assert_eq!(handle(&dev, &desc(Op::Read, 7, 2), &mut buf), -EINVAL);
        assert_eq!(handle(&dev, &desc(Op::Read, u64::MAX / 2, 1), &mut buf), -EINVAL);
        assert_eq!(handle(&dev, &desc(Op::Read, 0, 5), &mut buf), -EINVAL);
        assert_eq!(handle(&dev, &desc(Op::Other(10), 0, 1), &mut buf), -EOPNOTSUPP);
    }

    #[test]
    fn a_read_only_stack_refuses_writes_with_an_errno() {
        let dev = ReadOnly(MemDev::new(vec![1; 1024]));
        let mut buf = vec![0u8; 512];
        assert!(handle(&dev, &desc(Op::Write, 0, 1), &mut buf) < 0);
        assert_eq!(handle(&dev, &desc(Op::Read, 1, 1), &mut buf), 512);
        assert_eq!(buf, vec![1; 512]);
    }
}
