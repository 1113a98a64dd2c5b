//! Arbitrary bytes → `ringmq::transport::proxy::parse`, the PROXY protocol header parser that
//! runs on the first bytes of every connection of a `proxy_protocol` listener. Checks that
//! nothing panics, that a complete header never claims more than the input or the bound and
//! does not depend on the bytes after it, that every shorter prefix of a complete header asks
//! for more bytes (so a header split across reads parses the same), that a refusal stays a
//! refusal whatever follows, that "more bytes" is only asked below the bound, and that a
//! version 1 address re-formatted parses back to itself.
//!
//! Input layout: the wire bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq::transport::proxy::{MAX_HEADER_LEN, ProxyHeader, parse};

fuzz_target!(|data: &[u8]| {
    let result = parse(data);
    match &result {
        Ok(Some(p)) => {
            assert!(p.len <= data.len() && p.len <= MAX_HEADER_LEN, "{p:?}");
            assert!(p.len >= 15, "shorter than any header: {p:?}");
            // The header alone parses the same: nothing after it was looked at.
            assert_eq!(parse(&data[..p.len]), result);
            // Every prefix asks for more (a split header is waited for, never refused).
            let step = (p.len / 64).max(1);
            for cut in (0..p.len).step_by(step).chain([p.len - 1]) {
                assert_eq!(parse(&data[..cut]), Ok(None), "prefix of {cut} bytes");
            }
            if data.starts_with(b"PROXY ")
                && let ProxyHeader::Proxied {
                    source,
                    destination,
                } = p.header
            {
                let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
                let text = format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    source.ip(),
                    destination.ip(),
                    source.port(),
                    destination.port()
                );
                let again = parse(text.as_bytes()).expect("re-formatted header parses");
                assert_eq!(again.map(|a| a.header), Some(p.header));
            }
        }
        Ok(None) => {
            assert!(data.len() < MAX_HEADER_LEN, "more asked at {} bytes", data.len());
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // A refusal stays one whatever comes after.
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\x00\x00");
            assert!(parse(&more).is_err(), "{e} became {:?}", parse(&more));
        }
    }
});
