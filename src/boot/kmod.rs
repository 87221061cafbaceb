//! Loading kernel modules from the initramfs, in dependency order.
//!
//! The dependency graph comes from `modules.dep` (written by `depmod` when
//! the initramfs is built) and built-in modules from `modules.builtin`, both
//! under `/lib/modules/$(uname -r)`. Modules are loaded with
//! `finit_module`; compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are
//! first offered to the kernel with `MODULE_INIT_COMPRESSED_FILE` and, where
//! the kernel cannot decompress them itself, decompressed here and loaded
//! with `init_module`.
//!
//! Module names compare with `-` and `_` as equal, as modprobe does.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

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
        Ok(Self::parse(root, &dep, &builtin))
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
        Self { root: root.to_path_buf(), modules, builtin }
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
        let mut report = LoadReport::default();
        for name in wanted {
            if self.is_builtin(name) && !self.contains(name) {
                report.builtin.push(canonical(name));
            }
        }
        let (order, missing) = self.load_order(wanted);
        report.missing = missing;
        for name in order {
            let path = self.path_of(&name).expect("load_order only yields known modules");
            match insmod(&path) {
                Ok(true) => report.loaded.push(name),
                Ok(false) => report.already.push(name),
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        report
    }
}

/// Inserts one module file. `Ok(false)` when it was already loaded.
pub fn insmod(path: &Path) -> io::Result<bool> {
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(with_path)?;
    let name = path.to_string_lossy();
    let compressed = [".ko.xz", ".ko.zst", ".ko.gz"].iter().any(|s| name.ends_with(s));
    let flags = if compressed { MODULE_INIT_COMPRESSED_FILE } else { 0 };
    let result = match rustix::system::finit_module(&file, c"", flags) {
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP)
            if compressed =>
        {
            // The kernel cannot decompress this format itself.
            let image = decompress_module(path, file).map_err(with_path)?;
            rustix::system::init_module(&image, c"")
        }
        other => other,
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
        ruzstd::decoding::StreamingDecoder::new(file)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            .take(limit)
            .read_to_end(&mut out)?
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
    fn canonical_names() {
        assert_eq!(canonical("kernel/drivers/usb/storage/usb-storage.ko.xz"), "usb_storage");
        assert_eq!(canonical("nls_cp437"), "nls_cp437");
        assert_eq!(canonical("nbd.ko"), "nbd");
    }

    #[test]
    fn missing_module_file_is_an_error_naming_it() {
        let err = insmod(Path::new("/nonexistent/nbd.ko")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/nbd.ko"), "{err}");
    }
}
