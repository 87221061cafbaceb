//! Size parsing and printing.

use std::fmt;

/// Parses a size with cloop-utils' suffixes: `k` 1000, `K` 1024, `m` 10^6,
/// `M` 2^20, `g` 10^9, `G` 2^30, `i` 2048 (an ISO sector). A bare number is
/// bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!("'{text}' is not a size"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("'{text}' is too large"))?;
    let factor: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "K" => 1024,
        "m" => 1_000_000,
        "M" => 1 << 20,
        "g" => 1_000_000_000,
        "G" => 1 << 30,
        "i" => 2048,
        other => return Err(format!("unknown factor '{other}' in '{text}' (use k K m M g G i)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("'{text}' is too large"))
}

/// Bytes in binary units, e.g. `1.5 MiB`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_match_cloop_utils() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(64000));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1m"), Ok(1_000_000));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1g"), Ok(1_000_000_000));
        assert_eq!(parse_size("3i"), Ok(6144));
        assert!(parse_size("12x").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("18446744073709551615K").is_err());
    }

    #[test]
    fn bytes_display() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(3 << 30).to_string(), "3.0 GiB");
    }
}
