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
