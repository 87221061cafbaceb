//! Boot options: the kernel command line turned into what `init` will do.
//!
//! Knoppix, live-boot and dracut users each bring their own spellings; all
//! of them are accepted and mapped onto one set of options (the table is
//! in docs/boot-options.md). A malformed value never stops the boot: it is
//! reported and the default applies.

use std::path::PathBuf;
use std::time::Duration;

use super::cmdline::Cmdline;

/// Where `break=` stops, in boot order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// After the early mounts, before modules are loaded.
    Top,
    /// After modules, before the medium search.
    Modules,
    /// After the medium is mounted, before the image is served.
    Media,
    /// After the root is mounted, before switch_root.
    Bottom,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Top => "top",
            Stage::Modules => "modules",
            Stage::Media => "premount",
            Stage::Bottom => "bottom",
        }
    }

    /// Knoppix/initramfs-tools names and dracut's rd.break hook names.
    fn parse(word: &str) -> Option<Stage> {
        Some(match word {
            "top" | "cmdline" => Stage::Top,
            "modules" | "pre-udev" => Stage::Modules,
            "premount" | "media" | "pre-trigger" | "initqueue" => Stage::Media,
            "mount" | "bottom" | "init" | "pre-mount" | "pre-pivot" | "cleanup" => Stage::Bottom,
            _ => return None,
        })
    }
}

/// How big the tmpfs that holds the cowfile (or overlay upper) may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CowSize {
    /// Percent of RAM, as tmpfs `size=N%`.
    Percent(u8),
    Bytes(u64),
}

/// Where changes persist across boots (`cow=DEV:PATH`): a cowfile (or,
/// for read-only images, an overlay directory) at PATH on DEV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// `/dev/...`, `LABEL=...` or `UUID=...`.
    pub device: String,
    /// Absolute path on that filesystem.
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions {
    pub knoppix_dir: String,
    pub knoppix_name: String,
    /// A device to search first (`bootfrom=`, `live-media=`, `fromhd=`).
    pub bootfrom: Option<PathBuf>,
    /// An ISO file holding the medium (`bootfrom=/dev/sda1/k.iso`,
    /// `findiso=`, `iso-scan/filename=`): a path on `bootfrom`'s device,
    /// or on any filesystem when no device is given. The last component
    /// may hold `*` and `?` if it matches one file only.
    pub iso_file: Option<String>,
    /// How long to wait for the medium to appear.
    pub media_timeout: Duration,
    /// Copy the images to RAM and release the medium.
    pub toram: bool,
    /// Eject an optical medium after toram and at shutdown.
    pub eject: bool,
    /// Verify the images (every block) before using them.
    pub media_check: bool,
    pub persistence: Option<Persistence>,
    pub cow_size: CowSize,
    pub init: PathBuf,
    pub init_args: Vec<String>,
    pub debug: bool,
    pub break_at: Vec<Stage>,
    /// `cloopbox.verity=`: the root hash each image must match.
    pub verity: VerityRoots,
    /// Flags for every root daemon from `cloopbox.prefetch=` (default
    /// [`LIVE_PREFETCH`]), `cloopbox.connections=`, `cloopbox.readahead=`
    /// and `cloopbox.maxrequest=` (docs/boot-options.md).
    pub cloopd: Vec<String>,
    /// `cloopbox.transport=`: how the root daemons reach the kernel.
    pub transport: TransportChoice,
    /// `cloopbox.preload=`: modules or filesystem types whose drivers load
    /// on a thread of their own from the start (the root image's
    /// filesystem: mklive writes it).
    pub preload: Vec<String>,
    /// `ip=`: the network set up before the image is fetched.
    pub ip: Option<crate::net::IpConfig>,
    /// `nameserver=` (repeatable): DNS servers before DHCP's.
    pub nameservers: Vec<std::net::Ipv4Addr>,
    /// `httpfs=`, `root=live:URL` or `fetch=`: the image on an HTTP server.
    pub net_root: Option<NetRoot>,
    /// `cloopbox.cafile=PATH`: PEM certificates trusted for an `https://`
    /// image besides the built-in roots; `None`: [`DEFAULT_CA_FILE`] when
    /// the initramfs has one (see [`BootOptions::ca_file`]).
    pub ca_file: Option<std::path::PathBuf>,
    /// Problems with the command line, reported once the console is up.
    pub warnings: Vec<String>,
}

/// `cloopbox.transport=nbd|ublk|auto` (docs/boot-options.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// The kernel's NBD client (the default; every kernel).
    Nbd,
    /// ublk_drv (`cloopd --transport ublk`), NBD when the kernel lacks it
    /// (said on the console).
    Ublk,
    /// ublk when the kernel has it, NBD otherwise, silently.
    Auto,
}

impl TransportChoice {
    fn parse(value: &str) -> Option<TransportChoice> {
        match value {
            "nbd" => Some(TransportChoice::Nbd),
            "ublk" => Some(TransportChoice::Ublk),
            "auto" => Some(TransportChoice::Auto),
            _ => None,
        }
    }
}

/// An image on an HTTP server instead of a local medium.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRoot {
    /// A cloop image, or an ISO holding KNOPPIX/KNOPPIX (docs/remote.md).
    pub url: String,
    /// `fetch=`: download it all into RAM first, then boot as `toram`.
    pub fetch: bool,
}

impl Default for BootOptions {
    fn default() -> Self {
        Self {
            knoppix_dir: "KNOPPIX".into(),
            knoppix_name: "KNOPPIX".into(),
            bootfrom: None,
            iso_file: None,
            media_timeout: Duration::from_secs(60),
            toram: false,
            eject: true,
            media_check: false,
            persistence: None,
            cow_size: CowSize::Percent(50),
            init: PathBuf::from("/sbin/init"),
            init_args: Vec::new(),
            debug: false,
            break_at: Vec::new(),
            verity: VerityRoots::Off,
            cloopd: vec!["--prefetch".to_string(), LIVE_PREFETCH.to_string()],
            transport: TransportChoice::Nbd,
            preload: Vec::new(),
            ip: None,
            nameservers: Vec::new(),
            net_root: None,
            ca_file: None,
            warnings: Vec::new(),
        }
    }
}

/// Where `mkinitramfs.sh -N --ca FILE` puts the CA file, used for
/// `https://` images when `cloopbox.cafile=` does not name another.
pub const DEFAULT_CA_FILE: &str = "/etc/cloopbox/ca.pem";

/// At most this many names in `cloopbox.preload=`.
pub const MAX_PRELOAD: usize = 16;

/// `cloopbox.preload=ext4,nls_utf8`: names of modules or filesystem types
/// (letters, digits, `_` and `-`); `None` if any is not.
fn parse_preload(value: &str) -> Option<Vec<String>> {
    let names: Vec<String> = value.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect();
    let valid =
        |n: &String| n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (!names.is_empty() && names.len() <= MAX_PRELOAD && names.iter().all(valid)).then_some(names)
}

/// Image blocks every root daemon decodes ahead of a sequential reader
/// (`cloopd --prefetch`) unless `cloopbox.prefetch=` says otherwise.
/// Measured in the live boot (BENCHMARKS.md, "Prefetch in the live boot
/// after the cache fix"): with the default zlib image over NBD the /usr
/// read took 0.89–0.90× the time at 2 vCPUs, boots within noise.
pub const LIVE_PREFETCH: u32 = 8;

/// A boot parameter, the cloopd flag it becomes, and what a valid value is.
type DaemonFlag = (&'static str, &'static str, fn(&str) -> bool);

/// Boot parameters passed on to every root daemon as a cloopd flag.
const DAEMON_FLAGS: [DaemonFlag; 4] = [
    ("cloopbox.prefetch", "--prefetch", |v| v.parse::<u32>().is_ok_and(|n| n <= 4096)),
    ("cloopbox.connections", "--connections", |v| v.parse::<u32>().is_ok_and(|n| (1..=16).contains(&n))),
    ("cloopbox.readahead", "--read-ahead", |v| crate::nbd::kernel::Limit::parse(v).is_some()),
    ("cloopbox.maxrequest", "--max-request", |v| crate::nbd::kernel::Limit::parse(v).is_some()),
];

/// `cloopbox.verity=ROOTHASH` or `cloopbox.verity=KNOPPIX=ROOTHASH,KNOPPIX1=...`.
/// Unlike other options a malformed value is not ignored: the boot
/// refuses, since booting unverified is what the option forbids.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum VerityRoots {
    #[default]
    Off,
    /// Image file name and its root hash.
    Roots(Vec<(String, crate::verity::Digest)>),
    /// Why the value could not be read.
    Malformed(String),
}

impl VerityRoots {
    /// Parses the value; a bare hash is the root of `main_image`.
    pub fn parse(value: &str, main_image: &str) -> VerityRoots {
        let mut roots: Vec<(String, crate::verity::Digest)> = Vec::new();
        for item in value.split(',') {
            let (name, hash) = match item.split_once('=') {
                Some((name, hash)) => (name, hash),
                None => (main_image, item),
            };
            if medium_path(name).is_none_or(|p| p.contains('/') || p != name) {
                return VerityRoots::Malformed(format!(
                    "cloopbox.verity={value}: '{name}' is not an image file name"
                ));
            }
            match crate::verity::format::parse_root_hash(hash) {
                Ok(d) if roots.iter().all(|(n, _)| n != name) => roots.push((name.to_string(), d)),
                Ok(_) => {
                    return VerityRoots::Malformed(format!("cloopbox.verity={value}: {name} is given twice"))
                }
                Err(e) => return VerityRoots::Malformed(format!("cloopbox.verity={value}: {e}")),
            }
        }
        VerityRoots::Roots(roots)
    }

    /// The root hash `image` (a file name) must match: `Ok(None)` when
    /// verification is off, `Err` (the reason to refuse) when it is on
    /// and this image has no root hash, or the option was malformed.
    pub fn root_for(&self, image: &str) -> Result<Option<crate::verity::Digest>, String> {
        match self {
            VerityRoots::Off => Ok(None),
            VerityRoots::Malformed(why) => Err(why.clone()),
            VerityRoots::Roots(roots) => roots.iter().find(|(n, _)| n == image).map(|(_, d)| Some(*d)).ok_or_else(|| {
                format!("{image}: cloopbox.verity= gives no root hash for this image; refusing to use it unverified")
            }),
        }
    }

    /// [`VerityRoots::root_for`], for the only image of a boot (a network
    /// root, or its copy in RAM): a single root hash is its, whatever the
    /// file is called (`x.cloop` on a server, with a bare hash that is
    /// nominally `KNOPPIX`'s).
    pub fn root_for_only(&self, image: &str) -> Result<Option<crate::verity::Digest>, String> {
        match (self.root_for(image), self) {
            (Err(_), VerityRoots::Roots(roots)) if roots.len() == 1 => Ok(Some(roots[0].1)),
            (r, _) => r,
        }
    }
}

/// A relative path on the medium: no empty, `.` or `..` components.
fn medium_path(value: &str) -> Option<String> {
    let trimmed = value.trim_matches('/');
    let ok = !trimmed.is_empty() && trimmed.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then(|| trimmed.to_string())
}

impl BootOptions {
    pub fn from_cmdline(c: &Cmdline) -> BootOptions {
        let mut o = BootOptions::default();
        if let Some(v) = c.value_of_any(&["knoppix_dir", "rd.live.dir", "live-media-path"]) {
            match medium_path(v) {
                Some(p) => o.knoppix_dir = p,
                None => {
                    o.warnings.push(format!("knoppix_dir={v}: not a relative path; using {}", o.knoppix_dir))
                }
            }
        }
        if let Some(v) = c.value("knoppix_name") {
            match medium_path(v).filter(|p| !p.contains('/')) {
                Some(p) => o.knoppix_name = p,
                None => {
                    o.warnings.push(format!("knoppix_name={v}: not a file name; using {}", o.knoppix_name))
                }
            }
        }
        if let Some(v) = c.value_of_any(&["bootfrom", "live-media", "fromhd", "fromiso", "isofrom"]) {
            match split_device_path(v) {
                Some((dev, file)) => {
                    o.bootfrom = Some(PathBuf::from(dev));
                    o.iso_file = file;
                }
                None => {
                    o.warnings.push(format!("bootfrom={v}: expected a /dev path; searching every device"))
                }
            }
        }
        if let Some(v) = c.value_of_any(&["findiso", "iso-scan/filename"]) {
            match medium_path(v) {
                Some(p) if o.iso_file.is_none() => o.iso_file = Some(format!("/{p}")),
                Some(_) => o.warnings.push(format!("findiso={v}: bootfrom= already names an ISO file")),
                None => o.warnings.push(format!("findiso={v}: not a path to an ISO file")),
            }
        }
        o.toram = c.has("toram") || c.has("rd.live.ram");
        o.eject = !c.has("noeject");
        o.media_check =
            c.has("testcd") || c.has("rd.live.check") || c.has("check") || c.has("verify-checksums");
        if let Some(v) = c.value_of_any(&["cow", "rd.live.overlay", "persistent"]) {
            match parse_persistence(v) {
                Some(p) => o.persistence = Some(p),
                None => o.warnings.push(format!(
                    "cow={v}: expected DEVICE:/PATH (DEVICE a /dev path, LABEL=... or UUID=...); changes stay in RAM"
                )),
            }
        }
        if c.has("nopersistence") || c.has("noimage") {
            o.persistence = None;
        }
        if let Some(v) = c.value_of_any(&["live-media-timeout", "rootdelay"]) {
            match v.parse::<u64>() {
                Ok(s) if s <= 3600 => o.media_timeout = Duration::from_secs(s),
                _ => o.warnings.push(format!("rootdelay={v}: expected seconds (0-3600); waiting 60 s")),
            }
        }
        if let Some(v) = c.value_of_any(&["cowsize", "overlay-size", "rd.live.overlay.size"]) {
            match parse_cow_size(v) {
                Some(s) => o.cow_size = s,
                None => o.warnings.push(format!("cowsize={v}: expected N% or a size like 512M; using 50%")),
            }
        }
        if let Some(v) = c.value_of_any(&["init", "rdinit_next"]) {
            if v.starts_with('/') {
                o.init = PathBuf::from(v);
            } else {
                o.warnings.push(format!("init={v}: not an absolute path; using /sbin/init"));
            }
        }
        o.init_args = c.init_args.clone();
        // A bare runlevel ("single", "2") on the kernel command line is for init.
        for p in &c.params {
            if p.value.is_none()
                && matches!(
                    p.name.as_str(),
                    "single" | "S" | "s" | "1" | "2" | "3" | "4" | "5" | "emergency" | "rescue"
                )
            {
                o.init_args.push(p.name.clone());
            }
        }
        if let Some(v) = c.value("cloopbox.verity") {
            o.verity = VerityRoots::parse(v, &o.knoppix_name);
        } else if c.has("cloopbox.verity") {
            o.verity =
                VerityRoots::Malformed("cloopbox.verity: expected =ROOTHASH or =IMAGE=ROOTHASH,...".into());
        }
        for (param, flag, ok) in DAEMON_FLAGS {
            if let Some(v) = c.value(param) {
                if ok(v) {
                    // Replaces a default (the live prefetch window).
                    if let Some(at) = o.cloopd.iter().position(|f| f == flag) {
                        o.cloopd.drain(at..at + 2);
                    }
                    o.cloopd.extend([flag.to_string(), v.to_string()]);
                } else {
                    o.warnings.push(format!("{param}={v}: not a valid value; using the default"));
                }
            }
        }
        if let Some(v) = c.value("cloopbox.preload") {
            match parse_preload(v) {
                Some(names) => o.preload = names,
                None => o.warnings.push(format!(
                    "cloopbox.preload={v}: expected up to {MAX_PRELOAD} module or filesystem names, comma-separated; ignored"
                )),
            }
        }
        match c.value("cloopbox.transport").map(|v| (v, TransportChoice::parse(v))) {
            Some((_, Some(t))) => o.transport = t,
            Some((v, None)) => {
                o.warnings.push(format!("cloopbox.transport={v}: expected nbd, ublk or auto; using nbd"))
            }
            None => {}
        }
        o.parse_network(c);
        o.debug = c.has("debug") || c.has("rd.debug");
        for p in c.params.iter().filter(|p| p.name == "break" || p.name == "rd.break") {
            let value = p.value.as_deref().unwrap_or("premount");
            for word in value.split(',') {
                match Stage::parse(word) {
                    Some(s) if !o.break_at.contains(&s) => o.break_at.push(s),
                    Some(_) => {}
                    None => o
                        .warnings
                        .push(format!("break={word}: unknown stage (top, modules, premount, bottom)")),
                }
            }
        }
        o
    }

    /// The CA file for `https://` images: `cloopbox.cafile=` (which must
    /// then exist: a missing one is an error when the image is opened),
    /// else [`DEFAULT_CA_FILE`] if the initramfs holds it, else none (the
    /// built-in roots only).
    pub fn ca_file(&self) -> Option<std::path::PathBuf> {
        match &self.ca_file {
            Some(path) => Some(path.clone()),
            None => Some(std::path::PathBuf::from(DEFAULT_CA_FILE)).filter(|p| p.exists()),
        }
    }

    /// `httpfs=`, `root=live:URL`, `fetch=`, `ip=`, `nameserver=`,
    /// `cloopbox.cafile=`.
    fn parse_network(&mut self, c: &Cmdline) {
        match c.value("cloopbox.cafile") {
            Some(p) if p.starts_with('/') => self.ca_file = Some(p.into()),
            Some(p) => self.warnings.push(format!(
                "cloopbox.cafile={p}: not an absolute path; using {DEFAULT_CA_FILE} if the initramfs has it"
            )),
            None => {}
        }
        let lazy = c.value("httpfs").or_else(|| c.value("root").and_then(|r| r.strip_prefix("live:")));
        let lazy = lazy.filter(|u| u.contains("://"));
        let (url, fetch) = match (lazy, c.value("fetch")) {
            (Some(u), Some(_)) => {
                self.warnings
                    .push(format!("fetch= and httpfs= (or root=live:) both given: using the lazy {u}"));
                (Some(u), false)
            }
            (Some(u), None) => (Some(u), false),
            (None, Some(u)) => (Some(u), true),
            (None, None) => (None, false),
        };
        if let Some(u) = url {
            match crate::remote::Url::parse(u) {
                Ok(_) => self.net_root = Some(NetRoot { url: u.to_string(), fetch }),
                Err(e) => self.warnings.push(format!("{u}: {e}; looking for a local medium instead")),
            }
        }
        for p in c.params.iter().filter(|p| p.name == "nameserver") {
            match p.value.as_deref().map(str::parse::<std::net::Ipv4Addr>) {
                Some(Ok(a)) => self.nameservers.push(a),
                _ => self
                    .warnings
                    .push(format!("nameserver={}: not an IPv4 address", p.value.as_deref().unwrap_or(""))),
            }
        }
        match c.value("ip").map(crate::net::IpConfig::parse) {
            Some(Ok(ip)) => self.ip = ip,
            Some(Err(e)) => self.warnings.push(format!("{e}; using DHCP")),
            None => {}
        }
        // A network root without ip= (or with a malformed one) uses DHCP.
        if self.net_root.is_some() && self.ip.is_none() && c.value("ip").is_none_or(|v| v != "off") {
            self.ip = Some(crate::net::IpConfig::Dhcp { dev: None });
        }
    }

    /// `KNOPPIX/KNOPPIX`, relative to the medium's root.
    pub fn image_path(&self) -> String {
        format!("{}/{}", self.knoppix_dir, self.knoppix_name)
    }
}

/// Splits `/dev/sda1/dir/k.iso` into the device and the path after it.
/// `/dev/disk/by-*/NAME` and `/dev/mapper/NAME` keep their extra levels.
pub fn split_device_path(v: &str) -> Option<(String, Option<String>)> {
    let rest = v.strip_prefix("/dev/")?;
    let comps: Vec<&str> = rest.split('/').collect();
    let levels = match comps.first() {
        Some(&"disk") => 3,
        Some(&"mapper") => 2,
        _ => 1,
    };
    if comps.len() < levels || comps[..levels].iter().any(|c| c.is_empty() || *c == "." || *c == "..") {
        return None;
    }
    let dev = format!("/dev/{}", comps[..levels].join("/"));
    let tail = comps[levels..].join("/");
    if tail.trim_matches('/').is_empty() {
        return Some((dev, None));
    }
    let file = medium_path(&tail)?;
    Some((dev, Some(format!("/{file}"))))
}

/// `DEVICE:/PATH` with DEVICE `/dev/...`, `LABEL=...` or `UUID=...`.
fn parse_persistence(v: &str) -> Option<Persistence> {
    let (device, path) = v.rsplit_once(":/")?;
    let device_ok = device.starts_with("/dev/") && !device.contains("..")
        || device
            .strip_prefix("LABEL=")
            .or_else(|| device.strip_prefix("UUID="))
            .is_some_and(|x| !x.is_empty());
    let path = medium_path(path)?;
    device_ok.then(|| Persistence { device: device.to_string(), path: format!("/{path}") })
}

/// `50%`, `512M`, `2G`, `1048576`: binary suffixes, as tmpfs reads them.
pub fn parse_cow_size(v: &str) -> Option<CowSize> {
    if let Some(p) = v.strip_suffix('%') {
        return p.parse::<u8>().ok().filter(|p| (1..=100).contains(p)).map(CowSize::Percent);
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, suffix) = v.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let shift = match suffix {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift).filter(|b| *b > 0).map(CowSize::Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(line: &str) -> BootOptions {
        BootOptions::from_cmdline(&Cmdline::parse(line))
    }

    #[test]
    fn defaults() {
        let o = opts("quiet");
        assert_eq!(o.image_path(), "KNOPPIX/KNOPPIX");
        assert_eq!(o.media_timeout, Duration::from_secs(60));
        assert_eq!(o.cow_size, CowSize::Percent(50));
        assert_eq!(o.init, PathBuf::from("/sbin/init"));
        assert!(o.warnings.is_empty() && o.break_at.is_empty() && !o.debug);
    }

    #[test]
    fn knoppix_live_boot_and_dracut_spellings() {
        let o = opts("knoppix_dir=LIVE knoppix_name=KNX live-media=/dev/sdb1 live-media-timeout=5 cowsize=512M init=/bin/sh debug");
        assert_eq!(o.image_path(), "LIVE/KNX");
        assert_eq!(o.bootfrom, Some(PathBuf::from("/dev/sdb1")));
        assert_eq!(o.media_timeout, Duration::from_secs(5));
        assert_eq!(o.cow_size, CowSize::Bytes(512 << 20));
        assert_eq!(o.init, PathBuf::from("/bin/sh"));
        assert!(o.debug);
        let d =
            opts("rd.live.dir=/images/ rootdelay=120 rd.live.overlay.size=25% rd.debug rd.break=pre-pivot");
        assert_eq!(d.knoppix_dir, "images");
        assert_eq!(d.media_timeout, Duration::from_secs(120));
        assert_eq!(d.cow_size, CowSize::Percent(25));
        assert_eq!(d.break_at, vec![Stage::Bottom]);
    }

    #[test]
    fn iso_files_toram_check_and_persistence() {
        let o = opts("bootfrom=/dev/sda1/isos/K*.iso toram noeject testcd cow=/dev/vda1:/knoppix.cow");
        assert_eq!(o.bootfrom, Some(PathBuf::from("/dev/sda1")));
        assert_eq!(o.iso_file.as_deref(), Some("/isos/K*.iso"));
        assert!(o.toram && !o.eject && o.media_check);
        let p = o.persistence.unwrap();
        assert_eq!((p.device.as_str(), p.path.as_str()), ("/dev/vda1", "/knoppix.cow"));
        let o = opts("bootfrom=/dev/disk/by-label/DATA/k.iso rd.live.ram rd.live.check");
        assert_eq!(o.bootfrom, Some(PathBuf::from("/dev/disk/by-label/DATA")));
        assert_eq!(o.iso_file.as_deref(), Some("/k.iso"));
        assert!(o.toram && o.eject && o.media_check);
        let o = opts("iso-scan/filename=/boot/knoppix.iso rd.live.overlay=LABEL=persist:/cow/k.cow");
        assert_eq!(o.bootfrom, None);
        assert_eq!(o.iso_file.as_deref(), Some("/boot/knoppix.iso"));
        assert_eq!(o.persistence.unwrap().device, "LABEL=persist");
        assert_eq!(opts("findiso=k.iso").iso_file.as_deref(), Some("/k.iso"));
        assert_eq!(opts("bootfrom=/dev/sdb1").iso_file, None);
        assert!(opts("cow=/dev/vda1:/k.cow nopersistence").persistence.is_none());
        for bad in ["cow=/dev/vda1", "cow=vda1:/x", "cow=/dev/vda1:/../x", "cow=LABEL=:/x", "findiso=/a/../b"]
        {
            let o = opts(bad);
            assert!(o.persistence.is_none() && o.iso_file.is_none(), "{bad}");
            assert_eq!(o.warnings.len(), 1, "{bad}: {:?}", o.warnings);
        }
        assert_eq!(
            split_device_path("/dev/mapper/vg-lv/a/b.iso"),
            Some(("/dev/mapper/vg-lv".into(), Some("/a/b.iso".into())))
        );
        assert_eq!(split_device_path("/dev/../etc/x"), None);
        assert_eq!(split_device_path("/dev/disk/by-uuid"), None);
    }

    #[test]
    fn network_boot_spellings() {
        let o = opts("httpfs=http://10.0.2.100/KNOPPIX/KNOPPIX nameserver=10.0.2.101");
        assert_eq!(
            o.net_root,
            Some(NetRoot { url: "http://10.0.2.100/KNOPPIX/KNOPPIX".into(), fetch: false })
        );
        assert_eq!(o.ip, Some(crate::net::IpConfig::Dhcp { dev: None }), "a network root implies DHCP");
        assert_eq!(o.nameservers, [std::net::Ipv4Addr::new(10, 0, 2, 101)]);
        let o = opts("root=live:http://images.test/k.iso ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off");
        assert!(matches!(o.ip, Some(crate::net::IpConfig::Static { prefix: 24, .. })));
        assert_eq!(o.net_root.unwrap().url, "http://images.test/k.iso");
        let o = opts("fetch=http://h/k.iso");
        assert!(o.net_root.unwrap().fetch);
        assert!(
            opts("root=live:CDLABEL=KNOPPIX").net_root.is_none(),
            "dracut's local live: roots stay local"
        );
        assert!(opts("root=/dev/sda1").ip.is_none(), "no network unless asked");
        let o = opts("httpfs=ftp://h/x ip=10.0.2.300::::::off nameserver=x");
        assert!(o.net_root.is_none());
        assert_eq!(o.warnings.len(), 3, "{:?}", o.warnings);
    }

    #[test]
    fn ca_file_option() {
        let o = opts("httpfs=https://images.test/k.iso cloopbox.cafile=/etc/my-ca.pem");
        assert_eq!(o.net_root.as_ref().unwrap().url, "https://images.test/k.iso");
        assert_eq!(o.ca_file(), Some(PathBuf::from("/etc/my-ca.pem")), "named, so used even if missing");
        let o = opts("cloopbox.cafile=my-ca.pem");
        assert!(o.ca_file.is_none());
        assert!(o.warnings[0].contains("not an absolute path"), "{:?}", o.warnings);
        // Without the option: the initramfs's file when there is one.
        let o = opts("httpfs=https://h/k");
        assert_eq!(
            o.ca_file(),
            std::path::Path::new(DEFAULT_CA_FILE).exists().then(|| PathBuf::from(DEFAULT_CA_FILE))
        );
    }

    #[test]
    fn break_stages() {
        assert_eq!(opts("break").break_at, vec![Stage::Media]);
        assert_eq!(opts("break=top,modules,top").break_at, vec![Stage::Top, Stage::Modules]);
        let o = opts("break=bogus");
        assert!(o.break_at.is_empty());
        assert!(o.warnings[0].contains("bogus"));
    }

    #[test]
    fn preload_names_modules_or_filesystems_and_refuses_anything_else() {
        assert_eq!(opts("cloopbox.preload=ext4").preload, ["ext4"]);
        assert_eq!(
            opts("cloopbox.preload=ext4,nls_utf8,,usb-storage").preload,
            ["ext4", "nls_utf8", "usb-storage"]
        );
        assert!(opts("quiet").preload.is_empty());
        let many = format!("cloopbox.preload={}", vec!["m"; MAX_PRELOAD + 1].join(","));
        for bad in
            ["cloopbox.preload=", "cloopbox.preload=../../x", "cloopbox.preload=ext4,a/b", many.as_str()]
        {
            let o = opts(bad);
            assert!(o.preload.is_empty(), "{bad}");
            assert!(o.warnings.len() == 1 && o.warnings[0].starts_with(bad), "{bad}: {:?}", o.warnings);
        }
    }

    #[test]
    fn daemon_flags_pass_through() {
        let o = opts(
            "cloopbox.prefetch=16 cloopbox.connections=2 cloopbox.readahead=512 cloopbox.maxrequest=auto",
        );
        // The given window replaces the default one.
        assert_eq!(
            o.cloopd,
            ["--prefetch", "16", "--connections", "2", "--read-ahead", "512", "--max-request", "auto"]
        );
        assert!(o.warnings.is_empty());
        // Without cloopbox.prefetch= the live default; 0 turns it off.
        assert_eq!(opts("").cloopd, ["--prefetch", "8"]);
        assert_eq!(opts("cloopbox.prefetch=0").cloopd, ["--prefetch", "0"]);
        assert_eq!(opts("cloopbox.readahead=512").cloopd, ["--prefetch", "8", "--read-ahead", "512"]);
        for bad in [
            "cloopbox.prefetch=-1",
            "cloopbox.connections=0",
            "cloopbox.readahead=lots",
            "cloopbox.maxrequest=-4",
        ] {
            let o = opts(bad);
            assert_eq!(o.cloopd, ["--prefetch", "8"], "{bad}");
            assert!(o.warnings.len() == 1 && o.warnings[0].starts_with(bad), "{bad}: {:?}", o.warnings);
        }
    }

    #[test]
    fn transports() {
        assert_eq!(opts("").transport, TransportChoice::Nbd);
        assert_eq!(opts("cloopbox.transport=ublk").transport, TransportChoice::Ublk);
        assert_eq!(opts("cloopbox.transport=auto").transport, TransportChoice::Auto);
        assert_eq!(opts("cloopbox.transport=nbd").transport, TransportChoice::Nbd);
        let bad = opts("cloopbox.transport=loop");
        assert_eq!(bad.transport, TransportChoice::Nbd);
        assert!(bad.warnings[0].starts_with("cloopbox.transport=loop: expected nbd, ublk or auto"));
    }

    #[test]
    fn init_arguments() {
        let o = opts("single -- --log-level=debug");
        assert_eq!(o.init_args, vec!["--log-level=debug", "single"]);
    }

    #[test]
    fn malformed_values_warn_and_keep_defaults() {
        let o =
            opts("knoppix_dir=../etc knoppix_name=a/b bootfrom=sda rootdelay=-1 cowsize=lots init=sbin/init");
        assert_eq!(o, BootOptions { warnings: o.warnings.clone(), ..BootOptions::default() });
        assert_eq!(o.warnings.len(), 6, "{:?}", o.warnings);
        assert!(opts("cowsize=0").warnings.len() == 1);
        assert!(opts("cowsize=101%").warnings.len() == 1);
        assert!(opts("rootdelay=99999999999999999999").warnings.len() == 1);
        assert!(opts("cowsize=99999999999G").warnings.len() == 1);
    }

    #[test]
    fn verity_root_hashes() {
        let (a, b) = ("ab".repeat(32), "CD".repeat(32));
        let o = opts(&format!("cloopbox.verity={a}"));
        assert_eq!(o.verity.root_for("KNOPPIX").unwrap(), Some([0xab; 32]));
        assert!(o
            .verity
            .root_for("KNOPPIX1")
            .unwrap_err()
            .contains("KNOPPIX1: cloopbox.verity= gives no root hash"));
        let o = opts(&format!("knoppix_name=K cloopbox.verity={a}"));
        assert_eq!(o.verity.root_for("K").unwrap(), Some([0xab; 32]));
        let o = opts(&format!("cloopbox.verity=KNOPPIX={a},KNOPPIX1={b}"));
        assert_eq!(o.verity.root_for("KNOPPIX").unwrap(), Some([0xab; 32]));
        assert_eq!(o.verity.root_for("KNOPPIX1").unwrap(), Some([0xcd; 32]));
        assert_eq!(opts("quiet").verity.root_for("KNOPPIX").unwrap(), None);
        assert!(o.warnings.is_empty());
        // The only image of a boot: one hash is its, whatever its name;
        // with several, the name must match.
        assert_eq!(o.verity.root_for_only("KNOPPIX1").unwrap(), Some([0xcd; 32]));
        assert!(o.verity.root_for_only("root.cloop").is_err());
        let one = opts(&format!("cloopbox.verity={a}"));
        assert_eq!(one.verity.root_for_only("root.cloop").unwrap(), Some([0xab; 32]));
        assert_eq!(opts("quiet").verity.root_for_only("root.cloop").unwrap(), None);
        let bad = opts("cloopbox.verity=xyz");
        assert!(bad.verity.root_for_only("KNOPPIX").is_err(), "malformed stays a refusal");
    }

    #[test]
    fn malformed_verity_values_refuse_every_image() {
        let a = "ab".repeat(32);
        for bad in [
            "cloopbox.verity".to_string(),
            "cloopbox.verity=".into(),
            "cloopbox.verity=xyz".into(),
            format!("cloopbox.verity={}", &a[..62]),
            format!("cloopbox.verity={a}00"),
            format!("cloopbox.verity=../K={a}"),
            format!("cloopbox.verity=a/b={a}"),
            format!("cloopbox.verity==,{a}"),
            format!("cloopbox.verity=KNOPPIX={a},KNOPPIX={a}"),
            format!("cloopbox.verity={a},"),
        ] {
            let o = opts(&bad);
            assert!(matches!(o.verity, VerityRoots::Malformed(_)), "{bad}: {:?}", o.verity);
            let why = o.verity.root_for("KNOPPIX").unwrap_err();
            assert!(why.starts_with("cloopbox.verity"), "{bad}: {why}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_command_lines_keep_sane_options(line in "(\\PC|[ =\"/.,%-]){0,200}") {
            let o = opts(&line);
            proptest::prop_assert!(o.init.is_absolute());
            proptest::prop_assert!(!o.knoppix_dir.is_empty());
            proptest::prop_assert!(!o.knoppix_dir.split('/').any(|c| c == ".." || c.is_empty()));
            proptest::prop_assert!(!o.knoppix_name.contains('/'));
            proptest::prop_assert!(o.media_timeout.as_secs() <= 3600);
        }

        #[test]
        fn arbitrary_values_of_known_options_keep_sane_options(
            name in proptest::sample::select(vec!["knoppix_dir", "knoppix_name", "bootfrom", "rootdelay",
                "cowsize", "init", "break", "live-media-path", "rd.live.overlay.size", "findiso", "cow",
                "iso-scan/filename", "rd.live.overlay"]),
            value in "(\\PC|[/.%]){0,40}",
        ) {
            let o = opts(&format!("{name}={value}"));
            proptest::prop_assert!(o.init.is_absolute());
            proptest::prop_assert!(!o.knoppix_dir.split('/').any(|c| c == ".." || c.is_empty()));
            proptest::prop_assert!(!o.knoppix_name.contains('/') && !o.knoppix_name.is_empty());
            proptest::prop_assert!(o.bootfrom.as_ref().is_none_or(|p| p.starts_with("/dev/")));
            proptest::prop_assert!(o.iso_file.as_ref().is_none_or(|p| p.starts_with('/') && !p.split('/').any(|c| c == "..")));
            proptest::prop_assert!(o.persistence.as_ref().is_none_or(|p| p.path.starts_with('/') && !p.path.split('/').any(|c| c == "..")));
        }
    }
}
