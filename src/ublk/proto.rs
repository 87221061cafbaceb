//! The ublk driver's structures (`include/uapi/linux/ublk_cmd.h`, Linux
//! 6.12), as little-endian bytes at the header's offsets, and its
//! ioctl-encoded command numbers (`UBLK_U_CMD_*`, `UBLK_U_IO_*`, which
//! 6.12 requires for I/O commands unless built with legacy opcodes).

/// `_IOC(dir, 'u', nr, size)`.
const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | ((b'u' as u32) << 8) | nr
}
const IOR: u32 = 2;
const IOWR: u32 = 3;
/// `sizeof(struct ublksrv_ctrl_cmd)`, `sizeof(struct ublksrv_io_cmd)`.
const CTRL_CMD: u32 = 32;
const IO_CMD: u32 = 16;

pub const CMD_GET_DEV_INFO: u32 = ioc(IOR, 0x02, CTRL_CMD);
pub const CMD_ADD_DEV: u32 = ioc(IOWR, 0x04, CTRL_CMD);
pub const CMD_DEL_DEV: u32 = ioc(IOWR, 0x05, CTRL_CMD);
pub const CMD_START_DEV: u32 = ioc(IOWR, 0x06, CTRL_CMD);
pub const CMD_STOP_DEV: u32 = ioc(IOWR, 0x07, CTRL_CMD);
pub const CMD_SET_PARAMS: u32 = ioc(IOWR, 0x08, CTRL_CMD);
/// Linux 6.9+: DEL_DEV without waiting for the disk's last opener (a
/// filesystem still mounted on it) to let go.
pub const CMD_DEL_DEV_ASYNC: u32 = ioc(IOR, 0x14, CTRL_CMD);
pub const IO_FETCH_REQ: u32 = ioc(IOWR, 0x20, IO_CMD);
pub const IO_COMMIT_AND_FETCH_REQ: u32 = ioc(IOWR, 0x21, IO_CMD);

/// `UBLK_F_CMD_IOCTL_ENCODE`: we speak the ioctl-encoded numbers.
pub const F_CMD_IOCTL_ENCODE: u64 = 1 << 6;
/// A control command not aimed at a queue.
const NO_QUEUE: u16 = u16::MAX;
/// `dev_id` of ADD_DEV: the driver picks a free number.
pub const ANY_DEV: u32 = u32::MAX;

/// `struct ublksrv_ctrl_cmd` without `addr` and `len`, which the ring
/// fills in from the buffer it passes.
pub fn ctrl_cmd(dev_id: u32, data0: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..4].copy_from_slice(&dev_id.to_le_bytes());
    b[4..6].copy_from_slice(&NO_QUEUE.to_le_bytes());
    b[16..24].copy_from_slice(&data0.to_le_bytes());
    b
}

/// `struct ublksrv_ctrl_dev_info` (64 bytes): the fields we set or read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevInfo {
    pub nr_hw_queues: u16,
    pub queue_depth: u16,
    pub state: u16,
    pub max_io_buf_bytes: u32,
    pub dev_id: u32,
    pub ublksrv_pid: i32,
    pub flags: u64,
}

pub const DEV_INFO_LEN: usize = 64;

impl DevInfo {
    pub fn encode(&self) -> [u8; DEV_INFO_LEN] {
        let mut b = [0u8; DEV_INFO_LEN];
        b[0..2].copy_from_slice(&self.nr_hw_queues.to_le_bytes());
        b[2..4].copy_from_slice(&self.queue_depth.to_le_bytes());
        b[4..6].copy_from_slice(&self.state.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_io_buf_bytes.to_le_bytes());
        b[12..16].copy_from_slice(&self.dev_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.ublksrv_pid.to_le_bytes());
        b[24..32].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; DEV_INFO_LEN]) -> DevInfo {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        DevInfo {
            nr_hw_queues: u16_at(0),
            queue_depth: u16_at(2),
            state: u16_at(4),
            max_io_buf_bytes: u32_at(8),
            dev_id: u32_at(12),
            ublksrv_pid: u32_at(16) as i32,
            flags: u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
        }
    }
}

/// `struct ublk_params`: `struct ublk_param_basic`, and
/// `struct ublk_param_discard` when discards are wanted (a writable
/// stack: a cowfile gives the space of trimmed blocks back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub read_only: bool,
    /// A writable stack has a volatile cache (FLUSH) and honours FUA.
    pub write_cache: bool,
    pub logical_bs_shift: u8,
    pub physical_bs_shift: u8,
    pub io_opt_shift: u8,
    pub io_min_shift: u8,
    /// The largest request, in 512-byte sectors.
    pub max_sectors: u32,
    pub dev_sectors: u64,
    /// Discard and write-zeroes requests in units of this many bytes; 0:
    /// none are sent.
    pub discard_granularity: u32,
}

/// The largest discard or write-zeroes request asked for, in sectors
/// (4 GiB; it carries no data, so no buffer bounds it).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 23;

/// `sizeof(struct ublk_params)` in 6.12: header 8, basic 32, discard 20,
/// devt 16, zoned 32, padded to 8.
pub const PARAMS_LEN: usize = 112;
const PARAM_TYPE_BASIC: u32 = 1;
const PARAM_TYPE_DISCARD: u32 = 1 << 1;
const ATTR_READ_ONLY: u32 = 1;
const ATTR_VOLATILE_CACHE: u32 = 1 << 2;
const ATTR_FUA: u32 = 1 << 3;

impl Params {
    pub fn encode(&self) -> [u8; PARAMS_LEN] {
        let mut b = [0u8; PARAMS_LEN];
        b[0..4].copy_from_slice(&(PARAMS_LEN as u32).to_le_bytes());
        let types = if self.discard_granularity > 0 {
            PARAM_TYPE_BASIC | PARAM_TYPE_DISCARD
        } else {
            PARAM_TYPE_BASIC
        };
        b[4..8].copy_from_slice(&types.to_le_bytes());
        let mut attrs = 0;
        if self.read_only {
            attrs |= ATTR_READ_ONLY;
        }
        if self.write_cache {
            attrs |= ATTR_VOLATILE_CACHE | ATTR_FUA;
        }
        b[8..12].copy_from_slice(&attrs.to_le_bytes());
        b[12] = self.logical_bs_shift;
        b[13] = self.physical_bs_shift;
        b[14] = self.io_opt_shift;
        b[15] = self.io_min_shift;
        b[16..20].copy_from_slice(&self.max_sectors.to_le_bytes());
        b[24..32].copy_from_slice(&self.dev_sectors.to_le_bytes());
        if self.discard_granularity > 0 {
            // discard_alignment (40) stays 0.
            b[44..48].copy_from_slice(&self.discard_granularity.to_le_bytes());
            b[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
            b[52..56].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
            // The driver takes single-range discards only.
            b[56..58].copy_from_slice(&1u16.to_le_bytes());
        }
        b
    }
}

/// What a request asks (`ublksrv_get_op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
    Discard,
    WriteZeroes,
    Other(u8),
}

/// `struct ublksrv_io_desc` (24 bytes), as the driver wrote it for a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoDesc {
    pub op: Op,
    /// `UBLK_IO_F_FUA`.
    pub fua: bool,
    pub nr_sectors: u32,
    pub start_sector: u64,
}

const IO_F_FUA: u32 = 1 << 13;

impl IoDesc {
    pub fn decode(b: &[u8; 24]) -> IoDesc {
        let op_flags = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
        let op = match (op_flags & 0xff) as u8 {
            0 => Op::Read,
            1 => Op::Write,
            2 => Op::Flush,
            3 => Op::Discard,
            5 => Op::WriteZeroes,
            n => Op::Other(n),
        };
        IoDesc {
            op,
            fua: op_flags & IO_F_FUA != 0,
            nr_sectors: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            start_sector: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        }
    }
}

/// log2 of a power of two from 512 to 2^31; the nearest lower power for
/// anything else.
pub fn shift_of(n: u32) -> u8 {
    (31 - n.max(1).leading_zeros()) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_numbers_are_the_headers() {
        // Values of the 6.12 header's macros (_IOWR('u', 4, 32 bytes)...).
        assert_eq!(CMD_ADD_DEV, 0xc020_7504);
        assert_eq!(CMD_DEL_DEV, 0xc020_7505);
        assert_eq!(CMD_START_DEV, 0xc020_7506);
        assert_eq!(CMD_STOP_DEV, 0xc020_7507);
        assert_eq!(CMD_SET_PARAMS, 0xc020_7508);
        assert_eq!(CMD_GET_DEV_INFO, 0x8020_7502);
        assert_eq!(CMD_DEL_DEV_ASYNC, 0x8020_7514);
        assert_eq!(IO_FETCH_REQ, 0xc010_7520);
        assert_eq!(IO_COMMIT_AND_FETCH_REQ, 0xc010_7521);
    }

    #[test]
    fn control_command_layout() {
        let b = ctrl_cmd(3, 0x1122_3344);
        assert_eq!(&b[0..4], &[3, 0, 0, 0]);
        assert_eq!(&b[4..6], &[0xff, 0xff]);
        assert_eq!(&b[16..20], &[0x44, 0x33, 0x22, 0x11]);
        assert!(b[6..16].iter().chain(&b[20..]).all(|&x| x == 0));
    }

    #[test]
    fn dev_info_round_trips_at_the_headers_offsets() {
        let info = DevInfo {
            nr_hw_queues: 2,
            queue_depth: 64,
            state: 1,
            max_io_buf_bytes: 131072,
            dev_id: 7,
            ublksrv_pid: 42,
            flags: F_CMD_IOCTL_ENCODE,
        };
        let b = info.encode();
        assert_eq!(&b[8..12], &131072u32.to_le_bytes());
        assert_eq!(b[24], 64);
        assert_eq!(DevInfo::decode(&b), info);
        // What the kernel fills in comes back out.
        let mut k = b;
        k[12..16].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(DevInfo::decode(&k).dev_id, 9);
    }

    #[test]
    fn params_layout() {
        let p = Params {
            read_only: true,
            write_cache: false,
            logical_bs_shift: 9,
            physical_bs_shift: 12,
            io_opt_shift: 17,
            io_min_shift: 9,
            max_sectors: 256,
            dev_sectors: 1 << 40,
            discard_granularity: 0,
        };
        let b = p.encode();
        assert_eq!(&b[0..8], &[112, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[8..12], &[1, 0, 0, 0]);
        assert_eq!(&b[12..16], &[9, 12, 17, 9]);
        assert_eq!(&b[16..20], &256u32.to_le_bytes());
        assert_eq!(&b[24..32], &(1u64 << 40).to_le_bytes());
        assert!(b[32..].iter().all(|&x| x == 0));
        let rw = Params { read_only: false, write_cache: true, discard_granularity: 4096, ..p }.encode();
        assert_eq!(&rw[4..8], &[3, 0, 0, 0]);
        assert_eq!(&rw[8..12], &[12, 0, 0, 0]);
        // struct ublk_param_discard at 40: alignment, granularity, max
        // discard and write-zeroes sectors, one segment.
        assert_eq!(&rw[40..44], &[0, 0, 0, 0]);
        assert_eq!(&rw[44..48], &4096u32.to_le_bytes());
        assert_eq!(&rw[48..52], &(1u32 << 23).to_le_bytes());
        assert_eq!(&rw[52..56], &(1u32 << 23).to_le_bytes());
        assert_eq!(&rw[56..58], &[1, 0]);
        assert!(rw[58..].iter().all(|&x| x == 0));
    }

    #[test]
    fn io_descriptors_decode_every_op_and_garbage() {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&(1u32 | IO_F_FUA).to_le_bytes());
        b[4..8].copy_from_slice(&8u32.to_le_bytes());
        b[8..16].copy_from_slice(&100u64.to_le_bytes());
        assert_eq!(IoDesc::decode(&b), IoDesc { op: Op::Write, fua: true, nr_sectors: 8, start_sector: 100 });
        for (n, op) in
            [(0, Op::Read), (2, Op::Flush), (3, Op::Discard), (5, Op::WriteZeroes), (4, Op::Other(4))]
        {
            b[0] = n;
            assert_eq!(IoDesc::decode(&b).op, op);
        }
        let d = IoDesc::decode(&[0xff; 24]);
        assert_eq!((d.op, d.nr_sectors, d.start_sector), (Op::Other(0xff), u32::MAX, u64::MAX));
    }

    #[test]
    fn shifts() {
        assert_eq!(shift_of(512), 9);
        assert_eq!(shift_of(4096), 12);
        assert_eq!(shift_of(131072), 17);
        assert_eq!(shift_of(3000), 11);
        assert_eq!(shift_of(0), 0);
    }
}
