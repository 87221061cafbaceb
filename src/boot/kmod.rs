//! Loading kernel modules from the initramfs, in dependency order.
//!
//! The dependency graph comes from `modules.dep` (written by `depmod` when
//! the initramfs is built) and built-in modules from `modules.builtin`, both
//! under `/lib/modules/$(uname -r)`. Modules are loaded with
//! `finit_module`. `.ko.xz` and `.ko.gz` modules are first offered to the
//! kernel with `MODULE_INIT_COMPRESSED_FILE` and, where the kernel cannot
//! decompress them itself, decompressed here and loaded with
//! `init_module`. `.ko.zst` modules, the form our initramfs carries them in
//! (initramfs/mkinitramfs.sh), are always decompressed here: libzstd in
//! userspace is several times faster than the kernel's xz, and Debian's
//! kernels decompress only xz. The signature is inside the uncompressed
//! module, so Secure Boot checks it either way.
//!
//! Module names compare with `-` and `_` as equal, as modprobe does.
//!
//! Hardware drivers are chosen by the devices present: every
//! `/sys/bus/*/devices/*/modalias` is matched against `modules.alias`
//! ([`Loader::scan`], repeated while init waits for a late USB stick), so a
//! boot loads the few drivers the machine needs, not every driver the
//! initramfs carries. Filesystem drivers are loaded when a filesystem of
//! that type is about to be mounted ([`Loader::ensure_fs`]), or earlier,
//! on a thread of their own, once init knows it will need them
//! ([`Loader::preload`]: `cloopbox.preload=`, and the root image's
//! filesystem as soon as it is probed). Under QEMU TCG ext4 with jbd2
//! takes about 0.4 s of CPU to load (the signature check and relocation of
//! 1.5 MB), which would otherwise sit between the root device and the
//! switch (BENCHMARKS.md, "Loading the root's filesystem driver ahead").

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `MODULE_INIT_COMPRESSED_FILE` (Linux 5.17): the kernel decompresses.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;
/// A module larger than this is refused rather than read into memory.
const MAX_MODULE_SIZE: u64 = 64 << 20;

/// Canonical module name: `usb-storage` and `usb_storage` are one module.
pub fn canonical(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

#[derive(Debug, Default, Clone)]
pub struct ModuleDb {
    root: PathBuf,
    /// name → (path relative to root, direct dependencies by name)
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
    /// `modules.alias`: (pattern, module), in file order.
    aliases: Vec<(String, String)>,
}

/// What happened to each requested module.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub already: Vec<String>,
    pub builtin: Vec<String>,
    pub missing: Vec<String>,
    pub failed: Vec<(String, String)>,
}

impl ModuleDb {
    /// Reads `modules.dep` and `modules.builtin` from a modules directory.
    /// A missing `modules.builtin` is fine; a missing `modules.dep` is not.
    pub fn open(root: &Path) -> io::Result<Self> {
        let dep = std::fs::read_to_string(root.join("modules.dep"))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.join("modules.dep").display())))?;
        let builtin = std::fs::read_to_string(root.join("modules.builtin")).unwrap_or_default();
        let mut db = Self::parse(root, &dep, &builtin);
        if let Ok(alias) = std::fs::read_to_string(root.join("modules.alias")) {
            db.parse_aliases(&alias);
        }
        Ok(db)
    }

    /// Reads `alias PATTERN MODULE` lines; others are skipped.
    pub fn parse_aliases(&mut self, text: &str) {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module), None) =
                (w.next(), w.next(), w.next(), w.next())
            {
                self.aliases.push((pattern.to_string(), canonical(module)));
            }
        }
    }

    pub fn has_aliases(&self) -> bool {
        !self.aliases.is_empty()
    }

    /// The modules a name stands for: the module itself, or whatever its
    /// alias patterns match (`fs-vfat`, a device modalias), each once.
    pub fn resolve(&self, name: &str) -> Vec<String> {
        let c = canonical(name);
        if self.modules.contains_key(&c) || self.builtin.contains(&c) {
            return vec![c];
        }
        let mut out: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if glob(pattern, name) && !out.contains(module) {
                out.push(module.clone());
            }
        }
        out
    }

    pub fn parse(root: &Path, dep: &str, builtin: &str) -> Self {
        let mut modules = HashMap::new();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else { continue };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(canonical).collect();
            modules.insert(canonical(path), (path.to_string(), deps));
        }
        let builtin = builtin.lines().map(str::trim).filter(|l| !l.is_empty()).map(canonical).collect();
        Self { root: root.to_path_buf(), modules, builtin, aliases: Vec::new() }
    }

    /// The modules a filesystem type needs: its driver (through the
    /// `fs-TYPE` alias, or a module of that name) and the character sets
    /// its mount will ask for.
    pub fn fs_modules(&self, fstype: &str) -> Vec<String> {
        let mut names = self.resolve(&format!("fs-{fstype}"));
        if names.is_empty() {
            names = self.resolve(fstype);
        }
        if NLS_USERS.contains(&fstype) {
            names.extend(NLS.iter().map(|n| n.to_string()));
        }
        names
    }

    /// What [`Loader::preload`] loads for `names` (modules, or filesystem
    /// types): the modules this initramfs has that `loaded` says are not
    /// loaded yet, each once; and the names that are nothing it knows
    /// (neither a module, a built-in one, nor a filesystem type).
    pub fn preload_plan(
        &self,
        names: &[String],
        loaded: impl Fn(&str) -> bool,
    ) -> (Vec<String>, Vec<String>) {
        let (mut wanted, mut unknown) = (Vec::new(), Vec::new());
        for name in names {
            let mut modules = self.resolve(name);
            if modules.is_empty() {
                modules = self.fs_modules(name);
            }
            if modules.is_empty() {
                unknown.push(name.clone());
            }
            for m in modules {
                if self.contains(&m) && !loaded(&m) && !wanted.contains(&m) {
                    wanted.push(m);
                }
            }
        }
        (wanted, unknown)
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&canonical(name))
    }

    /// The modules to insert for `wanted`, dependencies first, each once.
    /// Returns (names in load order, names that are neither loadable nor built in).
    pub fn load_order(&self, wanted: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut order = Vec::new();
        let mut missing = Vec::new();
        let mut state: HashMap<String, bool> = HashMap::new(); // false = visiting, true = done
        for name in wanted {
            self.visit(&canonical(name), &mut order, &mut missing, &mut state);
        }
        (order, missing)
    }

    fn visit(
        &self,
        name: &str,
        order: &mut Vec<String>,
        missing: &mut Vec<String>,
        state: &mut HashMap<String, bool>,
    ) {
        if state.contains_key(name) {
            return; // done, or a cycle (depmod refuses cycles; never loop on one)
        }
        state.insert(name.to_string(), false);
        match self.modules.get(name) {
            Some((_, deps)) => {
                for dep in deps {
                    self.visit(dep, order, missing, state);
                }
                order.push(name.to_string());
            }
            None if self.builtin.contains(name) => {}
            None => missing.push(name.to_string()),
        }
        state.insert(name.to_string(), true);
    }

    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.modules.get(&canonical(name)).map(|(p, _)| self.root.join(p))
    }

    /// Loads `wanted` and their dependencies; never stops at the first
    /// failure, so the report says everything that went wrong.
    pub fn load(&self, wanted: &[&str]) -> LoadReport {
        self.load_with(wanted, None)
    }

    /// [`ModuleDb::load`], with `params` (`name=value ...`, as
    /// `init_module(2)` takes them) for the module `params.0` only (a
    /// canonical name), not for its dependencies: modprobe's `MODULE
    /// PARAM=VALUE...`.
    pub fn load_with(&self, wanted: &[&str], params: Option<(&str, &std::ffi::CStr)>) -> LoadReport {
        let mut report = LoadReport::default();
        for name in wanted {
            if self.is_builtin(name) && !self.contains(name) {
                report.builtin.push(canonical(name));
            }
        }
        let (order, missing) = self.load_order(wanted);
        report.missing = missing;
        for name in order {
            // Loaded before (an earlier scan, or the kernel's own request):
            // no need to open the file again.
            if is_loaded(&name) {
                report.already.push(name);
                continue;
            }
            let path = self.path_of(&name).expect("load_order only yields known modules");
            let params = params.filter(|(target, _)| *target == name).map_or(c"", |(_, p)| p);
            match insmod_with(&path, params) {
                Ok(true) => report.loaded.push(name),
                Ok(false) => report.already.push(name),
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        report
    }
}

/// `*` and `?` glob, case-sensitive (modaliases carry upper-case hex).
/// One backtrack point: linear in practice, never exponential.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// A device's modalias: its `modalias` file, or the `MODALIAS=` line of
/// its `uevent` file. Some buses have only the latter: an SD card on the
/// mmc bus shows `MODALIAS=mmc:block` in `uevent` and has no `modalias`
/// file, and without it `mmc_block` is never loaded.
fn modalias_of(dev: &Path) -> Option<String> {
    let alias = match std::fs::read_to_string(dev.join("modalias")) {
        Ok(a) => a,
        Err(_) => {
            let uevent = std::fs::read_to_string(dev.join("uevent")).ok()?;
            uevent.lines().find_map(|l| l.strip_prefix("MODALIAS="))?.to_string()
        }
    };
    let alias = alias.trim();
    (!alias.is_empty()).then(|| alias.to_string())
}

/// Every device modalias the kernel shows now.
pub fn device_modaliases(sys_bus: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(buses) = std::fs::read_dir(sys_bus) else { return out };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else { continue };
        for dev in devices.flatten() {
            out.extend(modalias_of(&dev.path()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Filesystems whose mount asks the kernel for a character set.
const NLS_USERS: &[&str] = &["vfat", "msdos", "iso9660", "udf", "exfat", "ntfs3"];
const NLS: &[&str] = &["nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859_1"];

/// A thread of [`Ahead`] work: the names it covers and its handle, which
/// gives the work's result and how long it took.
type Running<R> = (Vec<String>, JoinHandle<(R, Duration)>);

/// Work started ahead on threads of its own, each for a set of names
/// (module names, here), and waited for by whatever needs one of them.
pub struct Ahead<R> {
    running: Mutex<Vec<Running<R>>>,
    finished: Mutex<Vec<Finished<R>>>,
}

/// One piece of [`Ahead`] work, done.
#[derive(Debug)]
pub struct Finished<R> {
    pub names: Vec<String>,
    /// What the work returned; `None` if its thread panicked.
    pub result: Option<R>,
    /// How long the work took on its thread.
    pub took: Duration,
    /// How long whoever needed it first waited for it to end.
    pub waited: Duration,
}

impl<R: Send + 'static> Default for Ahead<R> {
    fn default() -> Self {
        Ahead { running: Mutex::new(Vec::new()), finished: Mutex::new(Vec::new()) }
    }
}

impl<R: Send + 'static> Ahead<R> {
    /// Runs `work` on a new thread for `names`; if no thread can be made,
    /// runs it here (a spawn consumes its closure, hence the clone).
    pub fn start<W: FnOnce() -> R + Send + Clone + 'static>(&self, names: Vec<String>, work: W) {
        fn timed<R>(work: impl FnOnce() -> R) -> (R, Duration) {
            let t0 = Instant::now();
            let r = work();
            (r, t0.elapsed())
        }
        let in_thread = work.clone();
        match std::thread::Builder::new().name("ahead".into()).spawn(move || timed(in_thread)) {
            Ok(handle) => self.running.lock().unwrap_or_else(|e| e.into_inner()).push((names, handle)),
            Err(_) => {
                let (r, took) = timed(work);
                let done = Finished { names, result: Some(r), took, waited: Duration::ZERO };
                self.finished.lock().unwrap_or_else(|e| e.into_inner()).push(done);
            }
        }
    }

    /// Whether work started for `name` has not been waited for yet.
    pub fn covers(&self, name: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(covered, _)| covered.iter().any(|c| c == name))
    }

    /// Waits for the work started for any of `names`.
    pub fn wait_for(&self, names: &[String]) {
        let mine: Vec<_> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let (mine, rest) =
                running.drain(..).partition(|(covered, _)| covered.iter().any(|c| names.contains(c)));
            *running = rest;
            mine
        };
        self.join(mine);
    }

    /// Waits for all the work; returns everything finished so far, once.
    pub fn finish_all(&self) -> Vec<Finished<R>> {
        let all: Vec<_> = self.running.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        self.join(all);
        std::mem::take(&mut *self.finished.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn join(&self, work: Vec<Running<R>>) {
        for (names, handle) in work {
            let t0 = Instant::now();
            let joined = handle.join();
            let waited = t0.elapsed();
            let (result, took) = match joined {
                Ok((r, took)) => (Some(r), took),
                Err(_) => (None, waited),
            };
            self.finished.lock().unwrap_or_else(|e| e.into_inner()).push(Finished {
                names,
                result,
                took,
                waited,
            });
        }
    }
}

/// The modules database plus what was already handled, for the whole boot.
pub struct Loader {
    pub db: ModuleDb,
    seen: Mutex<HashSet<String>>,
    /// Modules loading ahead ([`Loader::preload`]).
    pub ahead: Ahead<LoadReport>,
}

static LOADER: OnceLock<Loader> = OnceLock::new();

impl Loader {
    /// Makes `db` the boot's module loader (the first call wins).
    pub fn install(db: ModuleDb) -> &'static Loader {
        LOADER.get_or_init(|| Loader { db, seen: Mutex::new(HashSet::new()), ahead: Ahead::default() })
    }

    pub fn get() -> Option<&'static Loader> {
        LOADER.get()
    }

    /// Loads the drivers for devices that appeared since the last scan.
    pub fn scan(&self) -> LoadReport {
        let mut wanted = Vec::new();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            for alias in device_modaliases(Path::new("/sys/bus")) {
                if seen.insert(alias.clone()) {
                    for m in self.db.resolve(&alias) {
                        if !wanted.contains(&m) {
                            wanted.push(m);
                        }
                    }
                }
            }
        }
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        self.db.load(&names)
    }

    /// Loads the driver for filesystem `fstype` (and the character sets
    /// its mount will ask for) unless the kernel already has it; first
    /// waits for it if it is [loading ahead](Loader::preload).
    pub fn ensure_fs(&self, fstype: &str) {
        let names = self.db.fs_modules(fstype);
        self.ahead.wait_for(&names);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.db.load(&names);
    }

    /// Starts loading `names` (modules, or filesystem types as
    /// [`Loader::ensure_fs`] takes them) with their dependencies on a
    /// thread of its own. A mount that needs one of them waits for that
    /// thread ([`Loader::ensure_fs`]); the boot waits for all of them
    /// before it leaves the initramfs ([`Ahead::finish_all`]). Modules
    /// already loaded, or loading ahead since an earlier call, are left
    /// out; nothing left, no thread.
    ///
    /// Returns the names that are neither a module, a built-in one nor a
    /// filesystem type this initramfs knows.
    pub fn preload(&'static self, names: &[String]) -> Vec<String> {
        // The root image's probe asks again for what `cloopbox.preload=`
        // may still be loading: not a second load of the same files.
        let (wanted, unknown) = self.db.preload_plan(names, |m| is_loaded(m) || self.ahead.covers(m));
        if wanted.is_empty() {
            return unknown;
        }
        // Covered: the modules and their dependencies, so that a mount
        // that needs only a dependency waits too.
        let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let (covered, _) = self.db.load_order(&refs);
        self.ahead.start(covered, move || {
            let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
            self.db.load(&refs)
        });
        unknown
    }
}

/// Makes sure the kernel can mount `fstype` now: loads its driver through
/// the boot's [`Loader`] if `/proc/filesystems` does not list it yet.
pub fn need_fs(fstype: &str) {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fstype)))
        .unwrap_or(true);
    if !listed {
        if let Some(loader) = Loader::get() {
            loader.ensure_fs(fstype);
        }
    }
}

/// Whether the kernel has module `name` (a canonical name) loaded.
pub fn is_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(name).join("initstate").exists()
}

/// Inserts one module file. `Ok(false)` when it was already loaded.
pub fn insmod(path: &Path) -> io::Result<bool> {
    insmod_with(path, c"")
}

/// [`insmod`] with module parameters (`name=value ...`).
pub fn insmod_with(path: &Path, params: &std::ffi::CStr) -> io::Result<bool> {
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(with_path)?;
    let name = path.to_string_lossy();
    let result = if name.ends_with(".ko.zst") {
        let image = decompress_module(path, file).map_err(with_path)?;
        rustix::system::init_module(&image, params)
    } else {
        let compressed = [".ko.xz", ".ko.gz"].iter().any(|s| name.ends_with(s));
        let flags = if compressed { MODULE_INIT_COMPRESSED_FILE } else { 0 };
        match rustix::system::finit_module(&file, params, flags) {
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP)
                if compressed =>
            {
                // The kernel cannot decompress this format itself.
                let image = decompress_module(path, file).map_err(with_path)?;
                rustix::system::init_module(&image, params)
            }
            other => other,
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        // The file is open: an error now is the kernel refusing the module
        // (ENOENT from its init: something it looks up is not loaded).
        Err(e) => Err(io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: the kernel refused it: {e}", path.display()),
        )),
    }
}

fn decompress_module(path: &Path, file: std::fs::File) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    let limit = MAX_MODULE_SIZE + 1;
    let n = if name.ends_with(".xz") {
        lzma_rust2::XzReader::new(file, true).take(limit).read_to_end(&mut out)?
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(file)?.take(limit).read_to_end(&mut out)?
    } else {
        flate2::read::GzDecoder::new(file).take(limit).read_to_end(&mut out)?
    };
    if n as u64 > MAX_MODULE_SIZE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "module larger than 64 MiB"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/isofs/isofs.ko:
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/storage/uas.ko: kernel/drivers/usb/storage/usb-storage.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/usb/core/usbcore.ko: kernel/drivers/usb/common/usb-common.ko
kernel/drivers/usb/common/usb-common.ko:
kernel/fs/a.ko.xz: kernel/fs/b.ko.xz
kernel/fs/b.ko.xz: kernel/fs/a.ko.xz
malformed line without colon
";

    fn db() -> ModuleDb {
        ModuleDb::parse(
            Path::new("/lib/modules/x"),
            DEP,
            "kernel/fs/ext4/ext4.ko\nkernel/drivers/block/loop.ko\n",
        )
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn preload_plans_modules_and_filesystem_types_once_and_names_the_unknown() {
        let mut db = db();
        db.parse_aliases("alias fs-iso9660 isofs\nalias fs-ext4 ext4\n");
        let none_loaded = |_: &str| false;
        // A filesystem type through its alias, a module, and one twice.
        let (wanted, unknown) = db.preload_plan(&names(&["iso9660", "uas", "isofs"]), none_loaded);
        assert_eq!(wanted, ["isofs", "uas"]);
        assert!(unknown.is_empty());
        // Built in (ext4, loop): nothing to load, and not unknown either.
        let (wanted, unknown) = db.preload_plan(&names(&["ext4", "loop", "ext5", "nls_utf8x"]), none_loaded);
        assert!(wanted.is_empty(), "{wanted:?}");
        assert_eq!(unknown, ["ext5", "nls_utf8x"]);
        // Already loaded: left out.
        let (wanted, _) = db.preload_plan(&names(&["uas", "isofs"]), |m| m == "uas");
        assert_eq!(wanted, ["isofs"]);
    }

    #[test]
    fn work_ahead_is_waited_for_by_what_needs_it_and_only_that() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let ahead: Ahead<u32> = Ahead::default();
        let (release, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (r, d) = (release.clone(), done.clone());
        ahead.start(names(&["ext4", "jbd2"]), move || {
            while !r.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(50));
            d.store(true, Ordering::Release);
            7
        });
        assert!(ahead.covers("jbd2") && !ahead.covers("isofs"));
        // Something else: no wait (the work cannot end before `release`).
        ahead.wait_for(&names(&["isofs", "nls_utf8"]));
        assert!(!done.load(Ordering::Acquire));
        release.store(true, Ordering::Release);
        // A dependency is enough to wait for the whole.
        ahead.wait_for(&names(&["jbd2"]));
        assert!(done.load(Ordering::Acquire));
        assert!(!ahead.covers("jbd2"));
        ahead.start(names(&["vfat"]), || panic!("a loader thread that dies"));
        let finished = ahead.finish_all();
        assert_eq!(finished.len(), 2, "{finished:?}");
        assert_eq!(finished[0].names, ["ext4", "jbd2"]);
        assert_eq!(finished[0].result, Some(7));
        // Lower bounds only: the work slept 50 ms after the wait began.
        assert!(
            finished[0].waited >= Duration::from_millis(40) && finished[0].took >= Duration::from_millis(40)
        );
        assert_eq!((finished[1].names.clone(), finished[1].result), (names(&["vfat"]), None));
        // Each once.
        assert!(ahead.finish_all().is_empty());
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let (order, missing) = db().load_order(&["uas", "usb_storage", "isofs"]);
        assert!(missing.is_empty());
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} in {order:?}"));
        assert!(pos("scsi_common") < pos("scsi_mod"));
        assert!(pos("usb_common") < pos("usbcore"));
        assert!(pos("usbcore") < pos("usb_storage"));
        assert!(pos("usb_storage") < pos("uas"));
        let unique: HashSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len(), "{order:?}");
        assert_eq!(order.last().map(String::as_str), Some("isofs"));
    }

    #[test]
    fn builtin_and_missing_are_reported_not_loaded() {
        let db = db();
        let (order, missing) = db.load_order(&["ext4", "loop", "nosuch"]);
        assert!(order.is_empty());
        assert_eq!(missing, vec!["nosuch"]);
        assert!(db.is_builtin("ext4"));
        assert_eq!(
            db.path_of("usb-storage").unwrap(),
            Path::new("/lib/modules/x/kernel/drivers/usb/storage/usb-storage.ko")
        );
    }

    #[test]
    fn cycles_terminate() {
        let (order, _) = db().load_order(&["a"]);
        assert_eq!(order, vec!["b", "a"]);
    }

    #[test]
    fn aliases_resolve_devices_and_filesystems() {
        let mut db = db();
        db.parse_aliases(
            "# comment\nalias fs-iso9660 isofs\nalias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb-storage\n\
             alias usb:v*p*d*dc*dsc*dp*ic08isc06ip62in* uas\nalias scsi:t-0x05* sr_mod\nalias broken\n",
        );
        assert!(db.has_aliases());
        assert_eq!(db.resolve("fs-iso9660"), ["isofs"]);
        assert_eq!(db.resolve("usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"), ["usb_storage"]);
        assert_eq!(db.resolve("scsi:t-0x05"), ["sr_mod"]);
        assert_eq!(db.resolve("usb-storage"), ["usb_storage"], "a module name is itself");
        assert_eq!(db.resolve("ext4"), ["ext4"], "built in");
        assert!(db.resolve("pci:v00008086d00007010sv*").is_empty());
    }

    #[test]
    fn globs_are_case_sensitive_and_linear() {
        assert!(glob("pci:v00008086d*", "pci:v00008086d00002922"));
        assert!(!glob("pci:v00008086d*", "pci:v00008086D00002922"));
        assert!(glob("a?c*", "abcdef") && !glob("a?c", "ac"));
        assert!(!glob(&"*a".repeat(40), &"a".repeat(39)));
    }

    #[test]
    fn modaliases_from_a_sysfs_tree() {
        let root = tempfile::tempdir().unwrap();
        for (bus, dev, alias) in
            [("pci", "0000:00:01.1", "pci:v00008086d00007010\n"), ("scsi", "0:0:0:0", "scsi:t-0x05\n")]
        {
            let d = root.path().join(bus).join("devices").join(dev);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("modalias"), alias).unwrap();
        }
        std::fs::create_dir_all(root.path().join("usb/devices/usb1")).unwrap(); // no modalias
                                                                                // The mmc bus: only a uevent file carries the alias.
        let card = root.path().join("mmc/devices/mmc0:aaaa");
        std::fs::create_dir_all(&card).unwrap();
        std::fs::write(card.join("uevent"), "DRIVER=mmcblk\nMMC_TYPE=SD\nMODALIAS=mmc:block\n").unwrap();
        assert_eq!(device_modaliases(root.path()), ["mmc:block", "pci:v00008086d00007010", "scsi:t-0x05"]);
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("kernel/drivers/usb/storage/usb-storage.ko.xz"), "usb_storage");
        assert_eq!(canonical("nls_cp437"), "nls_cp437");
        assert_eq!(canonical("nbd.ko"), "nbd");
    }

    #[test]
    fn zstd_modules_decompress_here_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let module: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("nbd.ko.zst");
        std::fs::write(&path, zstd::bulk::compress(&module, 19).unwrap()).unwrap();
        let image = decompress_module(&path, std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(image, module);
        // A truncated file (a damaged initramfs) is refused, not loaded short.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(decompress_module(&path, std::fs::File::open(&path).unwrap()).is_err());
        // The dependency list names .ko.zst files; the names stay canonical.
        let db = ModuleDb::parse(
            Path::new("/m"),
            "kernel/a/nbd.ko.zst: kernel/b/dep-x.ko.zst\nkernel/b/dep-x.ko.zst:\n",
            "",
        );
        let (order, missing) = db.load_order(&["nbd"]);
        assert_eq!((order, missing), (vec!["dep_x".to_string(), "nbd".into()], vec![]));
        assert_eq!(db.path_of("dep-x").unwrap(), Path::new("/m/kernel/b/dep-x.ko.zst"));
    }

    #[test]
    fn missing_module_file_is_an_error_naming_it() {
        let err = insmod(Path::new("/nonexistent/nbd.ko")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/nbd.ko"), "{err}");
    }
}
