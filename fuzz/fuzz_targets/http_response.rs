//! Fuzz target: any bytes as what an HTTP server sends back.
//!
//! The input is a byte stream of responses: each head is parsed, its
//! framing, Content-Range and keep-alive are evaluated, and its body is read
//! into a buffer sized from what the head claims (capped at 1 MiB, as a
//! range request would be), or skipped. Also the raw input as one head and
//! as a URL. Errors are expected; panics, hangs and allocations sized by
//! what the server merely claims are bugs.
#![no_main]

use std::io::Cursor;

use cloopbox::remote::http::{parse_content_range, parse_head, Conn, ContentRange, Framing};
use cloopbox::remote::Url;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_head(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(url) = Url::parse(text) {
            let _ = url.join("/x");
            let _ = url.to_string();
        }
        let _ = parse_content_range(text);
    }
    let mut conn = Conn::new(Cursor::new(data.to_vec()));
    for _ in 0..16 {
        let Ok(head) = conn.read_head() else { return };
        let _ = head.keep_alive();
        let _ = head.one("etag");
        let Ok(framing) = head.framing() else { return };
        let want = match head.content_range() {
            Ok(Some(ContentRange::Bytes { first, last, .. })) => last - first + 1,
            _ => match framing {
                Framing::Length(n) => n,
                _ => 4096,
            },
        };
        if want > 1 << 20 {
            if !matches!(conn.skip_body(framing, 1 << 16), Ok(true)) {
                return;
            }
            continue;
        }
        let mut body = vec![0u8; want as usize];
        if conn.read_body(framing, &mut body).is_err() {
            return;
        }
    }
});
