//! A small POSIX/GNU `getopt` for the applets that must accept the original
//! tools' flags exactly (`-B4096`, `-B 4096`, `-qv`, `-L -1`, options after
//! operands), which derive-style parsers do not. Long options (`--codec=xz`
//! or `--codec xz`) are supported for our own additions.

use std::ffi::OsString;

/// One parsed option: its name (`"B"` for `-B`, `"codec"` for `--codec`) and
/// its value if it takes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub opts: Vec<Opt>,
    pub operands: Vec<OsString>,
}

/// `short` is a getopt spec ("B:L:bq": a colon marks a value); `long` lists
/// long option names, with a trailing `=` when they take a value and `?`
/// when the value is optional (then only `--name=VALUE` gives one).
pub fn parse(args: &[OsString], short: &str, long: &[&str]) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else {
            parsed.operands.push(arg.clone());
            continue;
        };
        if text == "--" {
            parsed.operands.extend(iter.cloned());
            break;
        }
        if let Some(body) = text.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let optional = long.iter().any(|l| l.strip_suffix('?') == Some(name));
            let takes_value = if long.contains(&name) || optional {
                false
            } else if long.iter().any(|l| l.strip_suffix('=') == Some(name)) {
                true
            } else {
                return Err(format!("unknown option '--{name}'"));
            };
            let value = match (takes_value, inline) {
                (false, Some(v)) if optional => Some(v),
                (false, Some(_)) => return Err(format!("option '--{name}' takes no value")),
                (false, None) => None,
                (true, Some(v)) => Some(v),
                (true, None) => Some(next_value(&mut iter, &format!("--{name}"))?),
            };
            parsed.opts.push(Opt { name: name.to_string(), value });
            continue;
        }
        if text.len() < 2 || !text.starts_with('-') {
            parsed.operands.push(arg.clone());
            continue;
        }
        for (i, c) in text[1..].char_indices() {
            let pos = short.find(c).filter(|_| c != ':');
            let Some(pos) = pos else {
                return Err(format!("unknown option '-{c}'"));
            };
            if short[pos + c.len_utf8()..].starts_with(':') {
                let rest = &text[1 + i + c.len_utf8()..];
                let value =
                    if rest.is_empty() { next_value(&mut iter, &format!("-{c}"))? } else { rest.to_string() };
                parsed.opts.push(Opt { name: c.to_string(), value: Some(value) });
                break;
            }
            parsed.opts.push(Opt { name: c.to_string(), value: None });
        }
    }
    Ok(parsed)
}

fn next_value<'a>(iter: &mut impl Iterator<Item = &'a OsString>, name: &str) -> Result<String, String> {
    let value = iter.next().ok_or_else(|| format!("option '{name}' needs a value"))?;
    value.to_str().map(str::to_string).ok_or_else(|| format!("the value of '{name}' is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn names(p: &Parsed) -> Vec<(String, Option<String>)> {
        p.opts.iter().map(|o| (o.name.clone(), o.value.clone())).collect()
    }

    #[test]
    fn clusters_attached_values_and_negative_values() {
        let p = parse(&args(&["-qv", "-B4096", "-L", "-1", "in", "-", "-t", "2"]), "B:L:qvt:", &[]).unwrap();
        assert_eq!(
            names(&p),
            vec![
                ("q".into(), None),
                ("v".into(), None),
                ("B".into(), Some("4096".into())),
                ("L".into(), Some("-1".into())),
                ("t".into(), Some("2".into())),
            ]
        );
        assert_eq!(p.operands, args(&["in", "-"]));
    }

    #[test]
    fn long_options_and_double_dash() {
        let p =
            parse(&args(&["--codec=xz", "--json", "--codec", "lz4", "--", "-q"]), "q", &["codec=", "json"])
                .unwrap();
        assert_eq!(
            names(&p),
            vec![
                ("codec".into(), Some("xz".into())),
                ("json".into(), None),
                ("codec".into(), Some("lz4".into()))
            ]
        );
        assert_eq!(p.operands, args(&["-q"]));
    }

    #[test]
    fn errors_name_the_option() {
        assert!(parse(&args(&["-x"]), "q", &[]).unwrap_err().contains("-x"));
        assert!(parse(&args(&["-B"]), "B:", &[]).unwrap_err().contains("-B"));
        assert!(parse(&args(&["--nope"]), "", &["json"]).unwrap_err().contains("--nope"));
        assert!(parse(&args(&["--json=1"]), "", &["json"]).is_err());
        assert!(parse(&args(&["-:"]), "a:", &[]).is_err());
    }
}

#[cfg(test)]
mod optional_value_tests {
    use super::*;

    #[test]
    fn an_optional_value_is_only_taken_inline() {
        let argv: Vec<OsString> =
            ["--verity", "in", "--verity=t.v", "out"].iter().map(OsString::from).collect();
        let p = parse(&argv, "", &["verity?"]).unwrap();
        let got: Vec<Option<String>> = p.opts.iter().map(|o| o.value.clone()).collect();
        assert_eq!(got, vec![None, Some("t.v".into())]);
        assert_eq!(p.operands, vec![OsString::from("in"), OsString::from("out")]);
    }
}
