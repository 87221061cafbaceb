//! `/proc/self/mountinfo`, parsed: who is mounted where, from what device.
//!
//! Used to refuse detaching a mounted device (cowdev) and to tear the
//! mount tree down in the right order at shutdown (the exitrd).

/// One line of mountinfo (proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    /// `st_dev` of the filesystem as `(major, minor)`.
    pub dev: (u32, u32),
    /// The mount point, unescaped.
    pub point: String,
    pub fstype: String,
    /// The mount source (`/dev/nbd0`, `tmpfs`, `overlay`), unescaped.
    pub source: String,
    /// Per-mount options (`ro`/`rw`, `nosuid`, ...).
    pub options: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// `MAJOR:MINOR` as in sysfs `dev` files and mountinfo.
pub fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub fn unescape_octal(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(c) if b[i] == b'\\' => {
                out.push(c);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<Mount> {
    let mut f = line.split(' ');
    let id = f.next()?.parse().ok()?;
    let parent = f.next()?.parse().ok()?;
    let dev = parse_dev(f.next()?)?;
    let _root = f.next()?;
    let point = unescape_octal(f.next()?);
    let options = f.next()?.to_string();
    // Optional fields up to the "-" separator.
    f.by_ref().find(|w| *w == "-")?;
    let fstype = f.next()?.to_string();
    let source = unescape_octal(f.next()?);
    Some(Mount { id, parent, dev, point, fstype, source, options })
}

/// Every well-formed line; malformed ones are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// The current process's mounts (empty without /proc).
pub fn current() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse(&t)).unwrap_or_default()
}

/// The mount points whose device is one of `devs`.
pub fn mount_points(mounts: &[Mount], devs: &[(u32, u32)]) -> Vec<String> {
    mounts.iter().filter(|m| devs.contains(&m.dev)).map(|m| m.point.clone()).collect()
}

/// Mount points at or below `top`, deepest (and latest) first: the order
/// in which they can be unmounted.
pub fn below<'a>(mounts: &'a [Mount], top: &str) -> Vec<&'a Mount> {
    let top = top.trim_end_matches('/');
    let mut v: Vec<&Mount> = mounts
        .iter()
        .filter(|m| {
            m.point == top || top.is_empty() || m.point.strip_prefix(top).is_some_and(|r| r.starts_with('/'))
        })
        .collect();
    // Later mounts may sit on top of earlier ones at the same point.
    v.sort_by_key(|m| std::cmp::Reverse((m.point.matches('/').count(), m.id)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - tmpfs rootfs rw
30 22 43:0 / /oldroot rw,noatime - ext4 /dev/nbd0 rw
31 30 0:5 / /oldroot/dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=10k
32 30 43:32 / /mnt/my\\040disk ro master:3 - ext4 /dev/nbd1p1 ro
33 31 0:22 / /oldroot/dev/pts rw - devpts devpts rw
34 30 0:23 / /oldrootx rw - tmpfs tmpfs rw
garbage
1 2
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 6, "the two malformed lines are skipped");
        assert_eq!(m[1].point, "/oldroot");
        assert_eq!(m[1].source, "/dev/nbd0");
        assert_eq!(m[1].fstype, "ext4");
        assert_eq!(m[1].dev, (43, 0));
        assert!(!m[1].read_only());
        assert_eq!(m[3].point, "/mnt/my disk");
        assert!(m[3].read_only());
        assert_eq!(mount_points(&m, &[(43, 32), (43, 33)]), ["/mnt/my disk"]);
        assert!(mount_points(&m, &[(43, 64)]).is_empty());
        assert_eq!(parse_dev("43:16\n"), Some((43, 16)));
        assert_eq!(parse_dev("43"), None);
        assert_eq!(unescape_octal("a\\040b\\134c\\0"), "a b\\c\\0");
    }

    #[test]
    fn below_lists_deepest_first_and_respects_path_boundaries() {
        let m = parse(SAMPLE);
        let points: Vec<&str> = below(&m, "/oldroot").iter().map(|m| m.point.as_str()).collect();
        assert_eq!(
            points,
            ["/oldroot/dev/pts", "/oldroot/dev", "/oldroot"],
            "/oldrootx is not below /oldroot"
        );
    }
}
