//! The opening handshake (RFC 6455 4): checking the client's HTTP request, and the HTTP
//! responses, 101 Switching Protocols or a refusal.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;

use super::HandshakeError;

/// Appended to the client's key before hashing it into `Sec-WebSocket-Accept` (RFC 6455 1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Subprotocols we speak, in order of preference: MQTT 3.1.1 and 5.0 use `mqtt`
/// [MQTT-6.0.0-4]; `mqttv3.1` is what MQTT 3.1 era clients offer.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// Longest `X-Forwarded-For` entry kept for logs (an IPv6 address with a zone fits).
const PEER_HINT_MAX: usize = 64;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 4.2.2): base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(ACCEPT_GUID);
    BASE64.encode(ctx.finish().as_ref())
}

/// What the handshake keeps from a valid request.
#[derive(Debug)]
pub(super) struct Request<'a> {
    pub(super) key: &'a [u8],
    pub(super) subprotocol: &'static str,
    pub(super) forwarded_for: Option<&'a str>,
}

/// Checks an opening handshake request head (ending with the empty line).
pub(super) fn parse_request<'a>(head: &'a [u8], path: &str) -> Result<Request<'a>, HandshakeError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HandshakeError::Malformed("request line"));
    };
    if method != b"GET" {
        return Err(HandshakeError::Method);
    }
    if version != b"HTTP/1.1" {
        return Err(HandshakeError::Malformed("HTTP/1.1 required"));
    }
    let target_path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if target_path != path.as_bytes() {
        return Err(HandshakeError::NotFound);
    }
    let mut host = false;
    let mut upgrade = false;
    let mut connection = false;
    let mut ws_version: Option<&[u8]> = None;
    let mut key: Option<&[u8]> = None;
    let mut subprotocol: Option<&'static str> = None;
    let mut forwarded_for = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = parse_header_line(line)?;
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("host") {
            host = true;
        } else if is("upgrade") {
            upgrade |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if is("connection") {
            connection |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        } else if is("sec-websocket-version") {
            if ws_version.replace(value).is_some() {
                return Err(HandshakeError::Malformed("duplicate Sec-WebSocket-Version"));
            }
        } else if is("sec-websocket-key") {
            if key.replace(value).is_some() {
                return Err(HandshakeError::Malformed("duplicate Sec-WebSocket-Key"));
            }
        } else if is("sec-websocket-protocol") {
            // Subprotocol names are compared exactly: the client checks our echo that way.
            for t in tokens(value) {
                let offered = SUBPROTOCOLS.iter().position(|p| p.as_bytes() == t);
                let current = subprotocol.and_then(|s| SUBPROTOCOLS.iter().position(|p| *p == s));
                if let Some(i) = offered
                    && current.is_none_or(|c| i < c)
                {
                    subprotocol = SUBPROTOCOLS.get(i).copied();
                }
            }
        } else if is("x-forwarded-for") && forwarded_for.is_none() {
            forwarded_for = tokens(value)
                .next()
                .filter(|t| t.len() <= PEER_HINT_MAX && t.iter().all(|b| b.is_ascii_graphic()))
                .and_then(|t| std::str::from_utf8(t).ok());
        }
    }
    if !host {
        return Err(HandshakeError::Malformed("missing Host"));
    }
    if !(upgrade && connection) {
        return Err(HandshakeError::NotUpgrade);
    }
    if ws_version != Some(b"13".as_slice()) {
        return Err(HandshakeError::Version);
    }
    let key = key.ok_or(HandshakeError::Key)?;
    match BASE64.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    let subprotocol = subprotocol.ok_or(HandshakeError::Subprotocol)?;
    Ok(Request {
        key,
        subprotocol,
        forwarded_for,
    })
}

/// Splits `Name: value` (RFC 9112 5): no whitespace before the colon, value without
/// surrounding whitespace, no control characters but tab.
fn parse_header_line(line: &[u8]) -> Result<(&[u8], &[u8]), HandshakeError> {
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return Err(HandshakeError::Malformed("obsolete line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HandshakeError::Malformed("header line without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(HandshakeError::Malformed("header name"));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7F) {
        return Err(HandshakeError::Malformed(
            "control character in a header value",
        ));
    }
    Ok((name, value.trim_ascii()))
}

/// The non-empty elements of a comma-separated header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub(super) fn put_switching_protocols(out: &mut BytesMut, key: &[u8], subprotocol: &str) {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n",
        accept_key(key)
    );
    out.extend_from_slice(response.as_bytes());
}

/// A short plain-text refusal; the body names the problem, never echoes the request.
pub(super) fn write_http_error(e: &HandshakeError, out: &mut BytesMut) {
    let status = e.status();
    let (phrase, extra) = match status {
        404 => ("Not Found", ""),
        405 => ("Method Not Allowed", "Allow: GET\r\n"),
        426 => ("Upgrade Required", "Sec-WebSocket-Version: 13\r\n"),
        431 => ("Request Header Fields Too Large", ""),
        _ => ("Bad Request", ""),
    };
    let body = format!("{e}\n");
    let response = format!(
        "HTTP/1.1 {status} {phrase}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    out.extend_from_slice(response.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// RFC 6455 1.3: the example key and its accept value.
    #[test]
    fn accept_key_rfc_vector() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn header_tokens() {
        let t: Vec<&[u8]> = tokens(b" keep-alive ,Upgrade,, x").collect();
        assert_eq!(t, [&b"keep-alive"[..], b"Upgrade", b"x"]);
        assert_eq!(
            parse_header_line(b"Name :v"),
            Err(HandshakeError::Malformed("header name"))
        );
        assert_eq!(
            parse_header_line(b"Name:\t v \t").unwrap(),
            (&b"Name"[..], &b"v"[..])
        );
    }
}
