//! The HTTP request head: finding its end as `read_head` does (bytes arriving in
//! two pieces, the terminator possibly straddling them), parsing it with the
//! relay's `parse_head`, routing it and reading the headers admission uses.
//! Never a panic; a parsed head satisfies what the relay relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtce2ee_whisper::http;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // The first byte picks where the bytes are split into two reads.
    let (split, bytes) = (data[0] as usize, &data[1..]);
    let split = split.min(bytes.len());
    let whole = http::head_end(bytes);
    // Incremental, as `read_head`: search from just before the new bytes.
    let first = http::head_end(&bytes[..split]);
    let from = split.saturating_sub(3);
    let incremental = first.or_else(|| http::head_end(&bytes[from..]).map(|e| e + from));
    assert_eq!(
        whole, incremental,
        "the head's end depends on how it arrived"
    );
    let Some(end) = whole else {
        let _ = http::parse_head(bytes);
        return;
    };
    // A blank line ends the head, with CRLF or bare LF line ends.
    let head = &bytes[..end];
    assert!(end >= 2 && end <= bytes.len());
    assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"));
    // No earlier blank line: the head ends at the first one.
    assert!(http::head_end(&head[..end - 1]).is_none());
    if let Ok(req) = http::parse_head(&bytes[..end]) {
        assert!(req.path.starts_with('/'));
        assert!(!req.path.contains(['?', '#']));
        assert!(req.method.bytes().all(|b| b.is_ascii_uppercase()));
        assert!(req.version_minor <= 1);
        let _ = http::route(&req.method, &req.path);
        for name in [
            "upgrade",
            "connection",
            "sec-websocket-key",
            "origin",
            "x-forwarded-for",
        ] {
            let _ = req.header(name);
            let _ = req.header_has_token(name, "websocket");
            for v in req.headers(name) {
                let _ = v
                    .rsplit(',')
                    .next()
                    .map(|s| s.trim().parse::<std::net::IpAddr>());
            }
        }
        if let Some(key) = req.header("sec-websocket-key") {
            let accept = rtce2ee_whisper::handshake::accept_key(key);
            assert_eq!(accept.len(), 28);
        }
    }
});
