//! The kernel command line, split the way the kernel splits it.
//!
//! Rules of `next_arg()` in the kernel's `lib/cmdline.c`: arguments are
//! separated by whitespace; double quotes group whitespace and are removed
//! (`foo="a b"` and `"foo=a b"` both give `foo` = `a b`); the first `=`
//! separates the name from the value; everything after a lone `--` is for
//! init and is not a kernel parameter. Names are compared exactly, except
//! that the kernel treats `-` and `_` in names as equal, and so do we.

/// One `name[=value]` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub params: Vec<Param>,
    /// Arguments after `--`, handed to init.
    pub init_args: Vec<String>,
}

/// The longest command line we accept (the kernel's x86 limit is 2048;
/// other architectures allow more). Longer input is cut, never trusted.
pub const MAX_CMDLINE: usize = 64 * 1024;

impl Cmdline {
    pub fn parse(text: &str) -> Cmdline {
        let text = match text.char_indices().nth(MAX_CMDLINE) {
            Some((cut, _)) => &text[..cut],
            None => text,
        };
        let mut out = Cmdline::default();
        let mut after_dashes = false;
        for word in split_words(text) {
            if after_dashes {
                out.init_args.push(word);
            } else if word == "--" {
                after_dashes = true;
            } else {
                let (name, value) = match word.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (word, None),
                };
                out.params.push(Param { name, value });
            }
        }
        out
    }

    fn find(&self, name: &str) -> Option<&Param> {
        // The last occurrence wins, as for the kernel's own parameters.
        self.params.iter().rev().find(|p| same_name(&p.name, name))
    }

    /// Whether `name` appears at all (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The value of the last `name=value`; `None` if absent or valueless.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.find(name).and_then(|p| p.value.as_deref())
    }

    /// The first of several aliases that is present, by the order given.
    pub fn value_of_any(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.value(n))
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'-' || x == b'_') && (y == b'-' || y == b'_'))
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_kernel() {
        let c = Cmdline::parse("BOOT_IMAGE=/vmlinuz root=live:CDLABEL=KNOPPIX ro  quiet\n");
        assert_eq!(c.value("BOOT_IMAGE"), Some("/vmlinuz"));
        assert_eq!(c.value("root"), Some("live:CDLABEL=KNOPPIX"), "only the first '=' splits");
        assert!(c.has("ro") && c.has("quiet"));
        assert_eq!(c.value("ro"), None);
        assert!(!c.has("debug"));
    }

    #[test]
    fn quotes_group_and_are_removed() {
        let c = Cmdline::parse(r#"a="x y" "b=1 2" c=plain"#);
        assert_eq!(c.value("a"), Some("x y"));
        assert_eq!(c.value("b"), Some("1 2"));
        assert_eq!(c.value("c"), Some("plain"));
        let unterminated = Cmdline::parse(r#"a="x y"#);
        assert_eq!(unterminated.value("a"), Some("x y"));
        let empty = Cmdline::parse(r#"a="" b"#);
        assert_eq!(empty.value("a"), Some(""));
        assert!(empty.has("b"));
    }

    #[test]
    fn last_wins_dash_equals_underscore_and_init_args() {
        let c = Cmdline::parse("knoppix_dir=A knoppix-dir=B x -- single foo=bar");
        assert_eq!(c.value("knoppix_dir"), Some("B"));
        assert_eq!(c.value("knoppix-dir"), Some("B"));
        assert_eq!(c.init_args, vec!["single", "foo=bar"]);
        assert!(!c.has("single"));
        assert_eq!(c.value_of_any(&["findiso", "live-media", "bootfrom"]), None);
        let d = Cmdline::parse("live-media=/dev/sr0 bootfrom=/dev/sda1");
        assert_eq!(d.value_of_any(&["bootfrom", "live-media"]), Some("/dev/sda1"));
    }

    #[test]
    fn hostile_input_is_bounded() {
        let long = "x".repeat(MAX_CMDLINE * 2);
        let c = Cmdline::parse(&long);
        assert_eq!(c.params[0].name.len(), MAX_CMDLINE);
        for text in ["", " ", "\"", "=", "==", "\"=\"", "--", "-- --", "\u{0}\u{7f}é=ü"] {
            let _ = Cmdline::parse(text);
        }
        assert_eq!(Cmdline::parse("=v").value(""), Some("v"));
    }
}
