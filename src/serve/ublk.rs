//! `cloopd --transport ublk`: the stack served as `/dev/ublkbN` through
//! the kernel's `ublk_drv` (docs/ublk.md).
//!
//! The device's life, in the driver's order: ADD_DEV on
//! `/dev/ublk-control` (the driver picks the number), SET_PARAMS (size,
//! sector sizes, largest request, read-only or a write cache), one thread
//! per hardware queue that opens `/dev/ublkcN`, maps its descriptors and
//! hands every tag to the kernel (FETCH_REQ), then START_DEV, which adds
//! the disk. Each queue thread then reaps requests, serves them against
//! the stack and answers with COMMIT_AND_FETCH_REQ, batching the answers
//! of one wake-up into one submission.
//!
//! Stopping (SIGINT, SIGTERM, or a queue that failed): STOP_DEV removes
//! the disk (the kernel's last flushes are still served), the queue
//! threads end, the stack is flushed, and DEL_DEV frees the number
//! (DEL_DEV_ASYNC where the kernel has it: a filesystem still mounted on
//! the gone disk would make DEL_DEV wait for its unmount).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};

use super::daemon::{self, Event};
use super::{stack, Options, Stack};
use crate::blockdev::BlockDev;
use crate::control::proto::KernelDevice;
use crate::sys::ioctl::ublk::{Control, Queue, IO_RES_ABORT};
use crate::ublk::proto::{self, DevInfo, IoDesc, Params};

pub const CONTROL: &str = "/dev/ublk-control";
/// What a kernel without the driver gets told.
pub const NOT_FOUND: &str =
    "ublk: /dev/ublk-control: not found (modprobe ublk_drv; needs Linux 6.x with CONFIG_BLK_DEV_UBLK)";
/// Requests in flight per queue (one buffer each).
const DEPTH: u16 = 64;
/// At most this many queues (one thread each).
const MAX_QUEUES: usize = 16;
/// How often a waiting queue thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// How long a queue thread waits for `/dev/ublkcN` to appear.
const CDEV_WAIT: Duration = Duration::from_secs(5);

/// The largest request, in bytes, fixed when the device is added:
/// `--max-request` KiB; auto: the image's block size but at least 128 KiB
/// (a raw file's 4 KiB would cut every read into pages); kernel: 512 KiB,
/// ublksrv's default. At least 4 KiB, at most 1 MiB.
pub fn max_io_bytes(o: &Options, image_block: u32) -> u32 {
    use crate::nbd::kernel::Limit;
    let kib = match o.queue.max_sectors_kb {
        Limit::Auto => (image_block / 1024).max(128),
        Limit::Kernel => 512,
        Limit::Kib(n) => n,
    };
    kib.clamp(4, 1024) * 1024
}

/// The device parameters for a stack of `size` bytes.
pub fn params(size: u64, writable: bool, device_block: u32, image_block: u32, max_io: u32) -> Params {
    let logical = proto::shift_of(device_block.clamp(512, 4096));
    Params {
        read_only: !writable,
        write_cache: writable,
        logical_bs_shift: logical,
        physical_bs_shift: logical.max(12),
        io_opt_shift: proto::shift_of(image_block.clamp(512, max_io)).max(logical),
        io_min_shift: logical,
        max_sectors: max_io >> 9,
        // Whole logical blocks: a tail shorter than one is not a sector.
        dev_sectors: (size >> logical) << (logical - 9),
        // Trims give a cowfile's space back (fstrim on a live root).
        discard_granularity: if writable { 1 << logical.max(12) } else { 0 },
    }
}

/// The control side of one added device.
struct Device {
    control: Control,
    id: u32,
}

impl Device {
    fn command(&mut self, name: &str, op: u32, data0: u64, buf: Option<&mut [u8]>) -> Result<i32, String> {
        self.control
            .command(op, proto::ctrl_cmd(self.id, data0), buf)
            .map_err(|e| format!("ublk: {name} of device {}: {e}", self.id))
    }
}

fn open_control() -> Result<Control, String> {
    let fd = match rustix::fs::open(CONTROL, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NXIO) | Err(rustix::io::Errno::NODEV) => {
            return Err(NOT_FOUND.into())
        }
        Err(e) => return Err(format!("ublk: {CONTROL}: {}", io::Error::from(e))),
    };
    Control::new(fd).map_err(|e| format!("ublk: an io_uring for {CONTROL}: {e}"))
}

fn open_cdev(path: &str) -> io::Result<std::os::fd::OwnedFd> {
    let deadline = std::time::Instant::now() + CDEV_WAIT;
    loop {
        match rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other.map_err(io::Error::from),
        }
    }
}

/// One queue's thread: set up, say ready, serve until stopped.
fn serve_queue(
    dev: &dyn BlockDev,
    cdev: std::io::Result<std::os::fd::OwnedFd>,
    (id, q_id, depth, buf_size): (u32, u16, u16, usize),
    stop: &AtomicBool,
    ready: Sender<Result<(), String>>,
) -> Result<(), String> {
    let path = format!("/dev/ublkc{id}");
    let setup = cdev
        .and_then(|cdev| {
            Queue::new(cdev, q_id, depth, buf_size, (proto::IO_FETCH_REQ, proto::IO_COMMIT_AND_FETCH_REQ))
        })
        .and_then(|mut q| q.fetch_all().map(|()| q))
        .map_err(|e| format!("ublk: {path}: queue {q_id}: {e}"));
    let mut q = match setup {
        Ok(q) => {
            let _ = ready.send(Ok(()));
            q
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let mut done = Vec::with_capacity(usize::from(depth));
    let mut aborted = 0usize;
    loop {
        done.clear();
        q.wait(POLL, &mut done).map_err(|e| format!("ublk: {path}: queue {q_id}: {e}"))?;
        for &(tag, res) in &done {
            if res == IO_RES_ABORT {
                aborted += 1;
                continue;
            }
            if res != 0 {
                return Err(format!(
                    "ublk: {path}: queue {q_id} tag {tag}: the driver answered {}",
                    io::Error::from_raw_os_error(-res)
                ));
            }
            let d = IoDesc::decode(&q.desc(tag));
            let result = match q.buf(tag) {
                Some(buf) => crate::ublk::handle(dev, &d, buf),
                None => -crate::ublk::EIO,
            };
            q.commit(tag, result).map_err(|e| format!("ublk: {path}: queue {q_id}: {e}"))?;
        }
        if aborted >= usize::from(depth) || stop.load(Ordering::Acquire) {
            return Ok(());
        }
    }
}

/// The queue threads; `Err` when one could not start.
fn start_queues(
    dev: &Arc<dyn BlockDev>,
    info: &DevInfo,
    stop: &Arc<AtomicBool>,
    events: &Sender<Event>,
) -> (Vec<JoinHandle<()>>, Result<(), String>) {
    let mut threads = Vec::new();
    // The char device opens once (a second open is EBUSY): every queue
    // gets a duplicate of the one descriptor.
    let path = format!("/dev/ublkc{}", info.dev_id);
    let cdev = match open_cdev(&path) {
        Ok(fd) => fd,
        Err(e) => return (threads, Err(format!("ublk: {path}: {e}"))),
    };
    let (ready_tx, ready) = mpsc::channel();
    for q_id in 0..info.nr_hw_queues {
        let (dev, stop, events, ready_tx) = (dev.clone(), stop.clone(), events.clone(), ready_tx.clone());
        let shape = (info.dev_id, q_id, info.queue_depth, info.max_io_buf_bytes as usize);
        let fd = cdev.try_clone();
        let spawned = std::thread::Builder::new().name(format!("ublk-q{q_id}")).spawn(move || {
            match serve_queue(&*dev, fd, shape, &stop, ready_tx) {
                Err(e) => {
                    let _ = events.send(Event::Failed(e));
                }
                // Every tag aborted without our asking: the device was
                // deleted under us.
                Ok(()) if !stop.load(Ordering::Acquire) => {
                    let _ = events.send(Event::KernelGone);
                }
                Ok(()) => {}
            }
        });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => return (threads, Err(format!("ublk: queue thread: {e}"))),
        }
    }
    drop((ready_tx, cdev));
    for _ in 0..threads.len() {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (threads, Err(e)),
            Err(_) => return (threads, Err("ublk: a queue thread ended during setup".into())),
        }
    }
    (threads, Ok(()))
}

/// Stops the device (if started), ends the queue threads, flushes the
/// stack and deletes the device: the one way out once it was added.
fn teardown(
    mut device: Device,
    stop: &AtomicBool,
    threads: Vec<JoinHandle<()>>,
    dev: &dyn BlockDev,
) -> Result<(), String> {
    // Also when START_DEV never ran: it gives the fetched tags back.
    let stopped = device.command("STOP_DEV", proto::CMD_STOP_DEV, 0, None);
    stop.store(true, Ordering::Release);
    for t in threads {
        let _ = t.join();
    }
    let flushed = dev.flush().map_err(|e| format!("final flush failed: {e}"));
    // DEL_DEV waits until nobody holds the disk, and at shutdown the root
    // filesystem still does (read-only) until the exit initramfs unmounts
    // it after we are gone: without waiting where the kernel can (6.9+).
    let deleted = device
        .command("DEL_DEV_ASYNC", proto::CMD_DEL_DEV_ASYNC, 0, None)
        .or_else(|_| device.command("DEL_DEV", proto::CMD_DEL_DEV, 0, None));
    stopped.and(flushed).and(deleted).map(|_| ())
}

/// Serves `o` as `/dev/ublkbN` until SIGINT or SIGTERM (outside
/// `--root-daemon`), a `detach` on the control socket, or the driver
/// deleting the device.
pub fn run(o: Options) -> Result<(), String> {
    let (say, signals) = daemon::start(&o)?;
    let warn = say.warn_fn();
    let mut stack = stack::build(&o, warn.clone())?;
    let status = daemon::Status::of(&mut stack);
    let Stack { export, summary, device_block, image_block, .. } = stack;
    let dev = export.dev.clone();
    // Before the device exists: a failure here must not leave one behind.
    daemon::start_watch(&o, &say)?;
    let mut control = open_control()?;
    let max_io = max_io_bytes(&o, image_block);
    let wanted_id = match o.device {
        Some(Some(id)) => id,
        _ => proto::ANY_DEV,
    };
    let want = DevInfo {
        nr_hw_queues: o.threads.clamp(1, MAX_QUEUES) as u16,
        queue_depth: DEPTH,
        max_io_buf_bytes: max_io,
        dev_id: wanted_id,
        ublksrv_pid: std::process::id() as i32,
        flags: proto::F_CMD_IOCTL_ENCODE,
        ..DevInfo::default()
    };
    let mut buf = want.encode();
    control.command(proto::CMD_ADD_DEV, proto::ctrl_cmd(wanted_id, 0), Some(&mut buf)).map_err(|e| {
        match wanted_id {
            proto::ANY_DEV => format!("ublk: ADD_DEV: {e}"),
            id => format!("ublk: ADD_DEV of /dev/ublkb{id}: {e}"),
        }
    })?;
    // The driver fills in the number and may lower the queue count.
    let info = DevInfo::decode(&buf);
    let mut device = Device { control, id: info.dev_id };
    let stop = Arc::new(AtomicBool::new(false));
    let (events, event) = mpsc::channel::<Event>();
    let p =
        params(dev.size(), !export.read_only, device_block, image_block, info.max_io_buf_bytes.min(max_io));
    let mut pbuf = p.encode();
    if let Err(e) = device.command("SET_PARAMS", proto::CMD_SET_PARAMS, 0, Some(&mut pbuf)) {
        let _ = teardown(device, &stop, Vec::new(), &*dev);
        return Err(e);
    }
    let (threads, started) = start_queues(&dev, &info, &stop, &events);
    let started = started
        .and_then(|()| device.command("START_DEV", proto::CMD_START_DEV, std::process::id().into(), None));
    if let Err(e) = started {
        let _ = teardown(device, &stop, threads, &*dev);
        return Err(e);
    }
    let kernel_device = KernelDevice::Ublk(info.dev_id);
    let name = kernel_device.name();
    if let Err(e) = crate::nbd::kernel::tune_queue(Path::new("/sys/block"), &name, &o.queue, image_block) {
        warn(&format!("{kernel_device}: request shape: {e}"));
    }
    // Before the device line: whoever reads it can control us at once.
    let control_socket = daemon::start_control_of(&o, kernel_device, status, &events);
    if let Err(e) = daemon::print_device(&o, kernel_device) {
        let _ = teardown(device, &stop, threads, &*dev);
        return Err(e);
    }
    if !o.quiet {
        let place = format!(
            "{kernel_device} (ublk, {} queues of {}, {} byte sectors)",
            info.nr_hw_queues,
            info.queue_depth,
            1u32 << p.logical_bs_shift
        );
        daemon::announce(&summary, &[place], &say);
    }
    daemon::forward_signals(signals, events);
    // A detach flushes first, then removes the disk (STOP_DEV; the
    // kernel's last requests are still served); the rest of the teardown
    // follows below.
    let mut detach_ublk = || {
        dev.flush().map_err(|e| format!("flush before removing the disk failed: {e}"))?;
        device.command("STOP_DEV", proto::CMD_STOP_DEV, 0, None).map(|_| ())
    };
    let (reason, detach_request) =
        daemon::wait_for_stop(&o, &event, Some((kernel_device, &mut detach_ublk)), &say);
    let flushed = teardown(device, &stop, threads, &*dev).map_err(|e| format!("{reason}: {e}"));
    // The device is gone: free its control name for the next server.
    if let Some(c) = control_socket {
        c.stop();
    }
    daemon::answer_detach(detach_request, Some(kernel_device), &flushed);
    flushed?;
    if !o.quiet {
        say.info(&format!("{reason}: {kernel_device} stopped and deleted cleanly"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_follow_the_stack() {
        let p = params(10 * 1024 * 1024 + 100, false, 4096, 131072, 131072);
        assert!(p.read_only && !p.write_cache);
        assert_eq!(
            (p.logical_bs_shift, p.physical_bs_shift, p.io_opt_shift, p.io_min_shift),
            (12, 12, 17, 12)
        );
        assert_eq!(p.max_sectors, 256);
        // The 100-byte tail is not a whole 4096-byte sector.
        assert_eq!(p.dev_sectors, 10 * 2048);
        let rw = params(1 << 20, true, 512, 65536, 131072);
        assert!(!rw.read_only && rw.write_cache);
        assert_eq!((rw.logical_bs_shift, rw.physical_bs_shift, rw.io_opt_shift), (9, 12, 16));
        assert_eq!(rw.dev_sectors, 2048);
        assert_eq!((p.discard_granularity, rw.discard_granularity), (0, 4096));
    }

    #[test]
    fn request_size_follows_max_request() {
        use crate::nbd::kernel::Limit;
        let mut o = Options::new("img");
        assert_eq!(max_io_bytes(&o, 131072), 131072);
        assert_eq!(max_io_bytes(&o, 4096), 131072);
        assert_eq!(max_io_bytes(&o, 1 << 20), 1 << 20);
        o.queue.max_sectors_kb = Limit::Kib(256);
        assert_eq!(max_io_bytes(&o, 131072), 262144);
        o.queue.max_sectors_kb = Limit::Kernel;
        assert_eq!(max_io_bytes(&o, 131072), 512 * 1024);
        o.queue.max_sectors_kb = Limit::Kib(1 << 20);
        assert_eq!(max_io_bytes(&o, 131072), 1 << 20);
    }
}
