//! The few ioctls live booting needs that rustix has no safe wrapper for:
//! ejecting an optical disc, and attaching a file to a loop device (an ISO
//! file on a disk). This is the crate's only `unsafe` code; each call has
//! its own SAFETY argument, and the structures are checked against the
//! kernel's sizes by tests.
// The one audited exception to Cargo.toml's `unsafe_code = "deny"`; clippy's
// `undocumented_unsafe_blocks` (also denied there) holds every block here to
// its SAFETY comment.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::ioctl::{ioctl, Ioctl, IoctlOutput, NoArg, Opcode, Setter};

/// `include/uapi/linux/cdrom.h`.
const CDROMEJECT: Opcode = 0x5309;
const CDROM_LOCKDOOR: Opcode = 0x5329;
/// `include/uapi/linux/loop.h`.
const LOOP_SET_FD: Opcode = 0x4C00;
const LOOP_SET_STATUS64: Opcode = 0x4C04;
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LOOP_CTL_GET_FREE: Opcode = 0x4C82;

pub const LO_FLAGS_READ_ONLY: u32 = 1;
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
pub const LO_FLAGS_PARTSCAN: u32 = 8;

const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` (Linux 5.8).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

impl LoopInfo64 {
    fn new(flags: u32, name: &str) -> Self {
        let mut lo_file_name = [0u8; LO_NAME_SIZE];
        // NUL-terminated, truncated: it is only shown by losetup.
        let n = name.len().min(LO_NAME_SIZE - 1);
        lo_file_name[..n].copy_from_slice(&name.as_bytes()[..n]);
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

/// An ioctl whose result is its return value (`LOOP_CTL_GET_FREE`).
struct ReturnsInt<const OPCODE: Opcode>;

// SAFETY: the opcode takes no argument and returns a non-negative int; the
// pointer we pass is null and is never dereferenced by the kernel.
unsafe impl<const OPCODE: Opcode> Ioctl for ReturnsInt<OPCODE> {
    type Output = u32;
    const IS_MUTATING: bool = false;
    fn opcode(&self) -> Opcode {
        OPCODE
    }
    fn as_ptr(&mut self) -> *mut core::ffi::c_void {
        core::ptr::null_mut()
    }
    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut core::ffi::c_void) -> rustix::io::Result<u32> {
        u32::try_from(out).map_err(|_| rustix::io::Errno::INVAL)
    }
}

/// Opens the tray of the optical drive behind `fd` (opened with
/// O_NONBLOCK, as the drive may have no disc), unlocking the door first.
pub fn cdrom_eject(fd: impl AsFd) -> io::Result<()> {
    // SAFETY: CDROM_LOCKDOOR takes an int by value (0 = unlock); the
    // integer is passed as the argument, no memory is shared.
    let unlock = unsafe { rustix::ioctl::IntegerSetter::<CDROM_LOCKDOOR>::new_usize(0) };
    // SAFETY: as above; a drive that cannot lock answers an error, which
    // does not stop the eject.
    let _ = unsafe { ioctl(fd.as_fd(), unlock) };
    // SAFETY: CDROMEJECT takes no argument.
    unsafe { ioctl(fd.as_fd(), NoArg::<CDROMEJECT>::new()) }.map_err(io::Error::from)
}

/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: the index of a free loop
/// device (created if needed).
pub fn loop_get_free(control: impl AsFd) -> io::Result<u32> {
    // SAFETY: see `ReturnsInt`.
    unsafe { ioctl(control, ReturnsInt::<LOOP_CTL_GET_FREE>) }.map_err(io::Error::from)
}

/// Attaches `backing` to the loop device `dev` with `flags`
/// (`LO_FLAGS_*`), by `LOOP_CONFIGURE`, or on kernels before 5.8 by
/// `LOOP_SET_FD` plus `LOOP_SET_STATUS64`.
pub fn loop_attach(dev: impl AsFd, backing: impl AsFd, flags: u32, name: &str) -> io::Result<()> {
    let backing_fd = u32::try_from(backing.as_fd().as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?;
    let config =
        LoopConfig { fd: backing_fd, block_size: 0, info: LoopInfo64::new(flags, name), reserved: [0; 8] };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which
    // `LoopConfig` mirrors field for field (size checked by a test); the
    // Setter keeps the value alive for the duration of the call.
    match unsafe { ioctl(dev.as_fd(), Setter::<LOOP_CONFIGURE, LoopConfig>::new(config)) } {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOTTY) => {}
        Err(e) => return Err(e.into()),
    }
    // SAFETY: LOOP_SET_FD takes the backing file descriptor by value.
    let set_fd = unsafe { rustix::ioctl::IntegerSetter::<LOOP_SET_FD>::new_usize(backing_fd as usize) };
    // SAFETY: the fd argument is an open descriptor we borrow for the call.
    unsafe { ioctl(dev.as_fd(), set_fd) }?;
    // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`, mirrored by
    // `LoopInfo64` (size checked by a test).
    unsafe { ioctl(dev.as_fd(), Setter::<LOOP_SET_STATUS64, LoopInfo64>::new(config.info)) }
        .map_err(io::Error::from)
}

/// `kexec_file_load(2)`: loads `kernel` (with `initrd` and the command
/// line `cmdline`) as the kernel that `reboot(LINUX_REBOOT_CMD_KEXEC)`
/// starts, or with `unload` drops what is loaded. The kernel checks the
/// image itself (and its signature where the policy asks for one). rustix
/// has no wrapper and the crate has no libc: the system call is made
/// directly, x86_64 only (other architectures get `Unsupported`).
pub fn kexec_file_load(
    kernel: Option<BorrowedFd<'_>>,
    initrd: Option<BorrowedFd<'_>>,
    cmdline: &std::ffi::CStr,
    unload: bool,
) -> io::Result<()> {
    const KEXEC_FILE_UNLOAD: usize = 1;
    const KEXEC_FILE_NO_INITRAMFS: usize = 4;
    let fd = |f: Option<BorrowedFd<'_>>| f.map_or(-1isize, |f| f.as_raw_fd() as isize);
    let mut flags = 0;
    if unload {
        flags |= KEXEC_FILE_UNLOAD;
    }
    if initrd.is_none() {
        flags |= KEXEC_FILE_NO_INITRAMFS;
    }
    // The length counts the terminating NUL (kexec_file_load(2)).
    let (ptr, len) = (cmdline.as_ptr() as usize, cmdline.to_bytes_with_nul().len());
    #[cfg(target_arch = "x86_64")]
    {
        const SYS_KEXEC_FILE_LOAD: isize = 320;
        let ret: isize;
        // SAFETY: the x86_64 Linux system call convention (number in rax,
        // arguments in rdi, rsi, rdx, r10, r8; rcx and r11 clobbered). The
        // kernel reads `len` bytes at `ptr`, which `cmdline` keeps alive
        // for the call, and only reads the two descriptors, which the
        // borrows keep open; nothing of ours is written.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") SYS_KEXEC_FILE_LOAD => ret,
                in("rdi") fd(kernel),
                in("rsi") fd(initrd),
                in("rdx") len,
                in("r10") ptr,
                in("r8") flags,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        if ret < 0 {
            return Err(io::Error::from_raw_os_error(-ret as i32));
        }
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (fd(kernel), fd(initrd), ptr, len, flags);
        Err(io::Error::new(io::ErrorKind::Unsupported, "kexec_file_load: only on x86_64 for now"))
    }
}

/// The ublk driver's io_uring side (`linux/ublk_cmd.h`, docs/ublk.md):
/// the control ring on `/dev/ublk-control` and one ring per queue on
/// `/dev/ublkcN`. The commands' bytes are built and parsed in safe code
/// (`crate::ublk::proto`); what is here is what shares memory with the
/// kernel: the submission of a command that names a buffer, the
/// descriptor area mmapped from the char device, and the I/O buffers.
pub mod ublk {
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::time::Duration;

    use io_uring::{cqueue, opcode, squeue, types, IoUring};
    use rustix::mm::{MapFlags, ProtFlags};

    /// `UBLK_IO_RES_ABORT`: the device is going away; the command is
    /// not fetched again.
    pub const IO_RES_ABORT: i32 = -(rustix::io::Errno::NODEV.raw_os_error());

    /// `/dev/ublk-control` and a ring with 128-byte entries (a control
    /// command is 32 bytes, more than a 64-byte entry holds).
    pub struct Control {
        ring: IoUring<squeue::Entry128, cqueue::Entry>,
        fd: OwnedFd,
    }

    impl Control {
        pub fn new(fd: OwnedFd) -> io::Result<Control> {
            Ok(Control { ring: IoUring::builder().build(4)?, fd })
        }

        /// Runs one control command and waits for its answer: `cmd` is an
        /// encoded `struct ublksrv_ctrl_cmd` whose `addr` and `len` are
        /// filled in here from `buf`, which the kernel reads or writes
        /// during the command. The answer's negative errno is an error.
        pub fn command(&mut self, op: u32, mut cmd: [u8; 32], buf: Option<&mut [u8]>) -> io::Result<i32> {
            let (addr, len) = match buf {
                Some(b) => (b.as_mut_ptr() as u64, b.len()),
                None => (0, 0),
            };
            let len = u16::try_from(len).map_err(|_| io::Error::other("ublk: control buffer too large"))?;
            cmd[6..8].copy_from_slice(&len.to_le_bytes());
            cmd[8..16].copy_from_slice(&addr.to_le_bytes());
            let mut data = [0u8; 80];
            data[..32].copy_from_slice(&cmd);
            let sqe = opcode::UringCmd80::new(types::Fd(self.fd.as_raw_fd()), op)
                .cmd(data)
                .build()
                .user_data(op.into());
            // SAFETY: the entry names `buf` (through `addr`), which the
            // caller's borrow keeps alive and unaliased until this
            // function returns; it returns only after the command's
            // completion (submit_and_wait below, then the CQE is taken),
            // and the kernel touches the buffer only before completing.
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("ublk: control ring full"))?;
            loop {
                match self.ring.submit_and_wait(1) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => other?,
                };
                if let Some(cqe) = self.ring.completion().next() {
                    let res = cqe.result();
                    return if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res) };
                }
            }
        }
    }

    /// A memory mapping, unmapped on drop.
    struct Mapping {
        ptr: *mut core::ffi::c_void,
        len: usize,
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: `ptr`/`len` are exactly what mmap returned and
            // nothing borrows the mapping any more (borrows of its bytes
            // are tied to `&self`/`&mut self` of the owning queue).
            let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
        }
    }

    /// The size of one I/O descriptor (`struct ublksrv_io_desc`).
    pub const DESC_SIZE: usize = 24;
    /// `UBLK_MAX_QUEUE_DEPTH`: the stride of the queues' descriptor
    /// areas in the char device is sized for it.
    const MAX_QUEUE_DEPTH: usize = 4096;

    fn round_to_page(n: usize) -> usize {
        let page = rustix::param::page_size();
        n.div_ceil(page) * page
    }

    /// One hardware queue served by the thread that created it (the
    /// driver binds a queue to the task that fetched on it): its ring,
    /// the kernel's descriptor area and one buffer per tag.
    pub struct Queue {
        // Dropped first: closing the ring cancels the commands still in
        // the kernel.
        ring: IoUring,
        descs: Mapping,
        bufs: Option<Mapping>,
        cdev: OwnedFd,
        q_id: u16,
        buf_size: usize,
        /// Tags whose command (and buffer) the kernel holds.
        in_kernel: Vec<bool>,
        fetch_op: u32,
        commit_op: u32,
    }

    impl Queue {
        /// Maps queue `q_id`'s descriptors from `cdev` (`/dev/ublkcN`)
        /// and `depth` buffers of `buf_size` bytes. `ops` are
        /// `(UBLK_U_IO_FETCH_REQ, UBLK_U_IO_COMMIT_AND_FETCH_REQ)`.
        pub fn new(
            cdev: OwnedFd,
            q_id: u16,
            depth: u16,
            buf_size: usize,
            ops: (u32, u32),
        ) -> io::Result<Queue> {
            let depth_n = usize::from(depth);
            if depth == 0 || depth_n > MAX_QUEUE_DEPTH || buf_size == 0 {
                return Err(io::Error::other("ublk: bad queue depth or buffer size"));
            }
            let ring = IoUring::builder().build(u32::from(depth).next_power_of_two())?;
            let stride = round_to_page(MAX_QUEUE_DEPTH * DESC_SIZE) as u64;
            let len = round_to_page(depth_n * DESC_SIZE);
            // SAFETY: a new shared read-only mapping of the driver's
            // descriptor area; no Rust object aliases it, and we only
            // ever read it with volatile reads (the kernel writes it).
            let ptr = unsafe {
                rustix::mm::mmap(
                    core::ptr::null_mut(),
                    len,
                    ProtFlags::READ,
                    MapFlags::SHARED | MapFlags::POPULATE,
                    &cdev,
                    u64::from(q_id) * stride,
                )
            }?;
            let descs = Mapping { ptr, len };
            let blen = depth_n
                .checked_mul(buf_size)
                .ok_or_else(|| io::Error::other("ublk: buffers larger than the address space"))?;
            // SAFETY: a new private anonymous mapping nothing else refers to.
            let bptr = unsafe {
                rustix::mm::mmap_anonymous(
                    core::ptr::null_mut(),
                    blen,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::PRIVATE,
                )
            }?;
            let bufs = Some(Mapping { ptr: bptr, len: blen });
            Ok(Queue {
                ring,
                descs,
                bufs,
                cdev,
                q_id,
                buf_size,
                in_kernel: vec![false; depth_n],
                fetch_op: ops.0,
                commit_op: ops.1,
            })
        }

        fn buf_ptr(&self, tag: u16) -> *mut u8 {
            let base = self.bufs.as_ref().map_or(core::ptr::null_mut(), |m| m.ptr.cast::<u8>());
            base.wrapping_add(usize::from(tag) * self.buf_size)
        }

        fn push(&mut self, op: u32, tag: u16, result: i32) -> io::Result<()> {
            if usize::from(tag) >= self.in_kernel.len() || self.in_kernel[usize::from(tag)] {
                return Err(io::Error::other(format!("ublk: tag {tag} is not ours to submit")));
            }
            let mut cmd = [0u8; 16];
            cmd[0..2].copy_from_slice(&self.q_id.to_le_bytes());
            cmd[2..4].copy_from_slice(&tag.to_le_bytes());
            cmd[4..8].copy_from_slice(&result.to_le_bytes());
            cmd[8..16].copy_from_slice(&(self.buf_ptr(tag) as u64).to_le_bytes());
            let sqe = opcode::UringCmd16::new(types::Fd(self.cdev.as_raw_fd()), op)
                .cmd(cmd)
                .build()
                .user_data(u64::from(tag));
            // SAFETY: the command names tag's buffer inside `bufs`, which
            // stays mapped while the kernel holds the command: the tag is
            // marked in_kernel until its completion is reaped, no `&mut`
            // to it is handed out meanwhile (`buf` refuses), and `Drop`
            // leaks the mapping if any tag is still in the kernel.
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("ublk: submission queue full"))?;
            self.in_kernel[usize::from(tag)] = true;
            Ok(())
        }

        /// Hands every tag to the kernel (`FETCH_REQ`) and submits.
        pub fn fetch_all(&mut self) -> io::Result<()> {
            for tag in 0..self.in_kernel.len() as u16 {
                self.push(self.fetch_op, tag, 0)?;
            }
            self.ring.submit()?;
            Ok(())
        }

        /// Answers `tag` with `result` (bytes done or a negative errno)
        /// and fetches its next request; submitted by the next `wait`.
        pub fn commit(&mut self, tag: u16, result: i32) -> io::Result<()> {
            self.push(self.commit_op, tag, result)
        }

        /// Submits what is queued and waits up to `timeout` for
        /// completions: `(tag, result)` for each.
        pub fn wait(&mut self, timeout: Duration, out: &mut Vec<(u16, i32)>) -> io::Result<()> {
            let ts = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::TIME.raw_os_error() || c == rustix::io::Errno::INTR.raw_os_error()) =>
                    {}
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                let Ok(tag) = u16::try_from(cqe.user_data()) else { continue };
                if let Some(slot) = self.in_kernel.get_mut(usize::from(tag)) {
                    *slot = false;
                    out.push((tag, cqe.result()));
                }
            }
            Ok(())
        }

        /// The kernel's descriptor of `tag`'s request, as bytes.
        pub fn desc(&self, tag: u16) -> [u8; DESC_SIZE] {
            let off = usize::from(tag) * DESC_SIZE;
            if off + DESC_SIZE > self.descs.len {
                return [0xff; DESC_SIZE];
            }
            // SAFETY: inside the mapping (checked above); volatile
            // because the kernel writes the area; [u8; N] has alignment 1.
            unsafe {
                core::ptr::read_volatile(self.descs.ptr.cast::<u8>().add(off).cast::<[u8; DESC_SIZE]>())
            }
        }

        /// `tag`'s buffer, while the kernel does not hold it.
        pub fn buf(&mut self, tag: u16) -> Option<&mut [u8]> {
            if *self.in_kernel.get(usize::from(tag))? || self.bufs.is_none() {
                return None;
            }
            // SAFETY: tag's slice of the live buffer mapping; the kernel
            // is not using it (not in_kernel) and `&mut self` makes this
            // the only borrow until it ends.
            Some(unsafe { core::slice::from_raw_parts_mut(self.buf_ptr(tag), self.buf_size) })
        }

        /// Whether the kernel still holds any of our commands.
        pub fn busy(&self) -> bool {
            self.in_kernel.iter().any(|&b| b)
        }
    }

    impl Drop for Queue {
        fn drop(&mut self) {
            if self.busy() {
                // The kernel may still name these buffers: never unmap.
                std::mem::forget(self.bufs.take());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_match_the_kernel_sizes() {
        // sizeof(struct loop_info64) and sizeof(struct loop_config) on
        // every Linux architecture (no pointer-sized fields).
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn long_names_are_truncated_with_a_terminator() {
        let info = LoopInfo64::new(LO_FLAGS_READ_ONLY, &"x".repeat(100));
        assert_eq!(info.lo_file_name[62], b'x');
        assert_eq!(info.lo_file_name[63], 0);
        assert_eq!(info.lo_flags, 1);
    }
}
