//! WebSocket frames (RFC 6455 5): parsing a client frame's header, writing a server frame's,
//! and unmasking payloads.

use bytes::{BufMut, BytesMut};

use super::{
    CONTROL_MAX, CloseCode, FrameError, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
    OP_TEXT,
};

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub(super) fin: bool,
    pub(super) opcode: u8,
    pub(super) mask: [u8; 4],
    pub(super) len: u64,
    pub(super) header_len: usize,
}

/// Parses the frame header at the front of `buf`; `None` until it is complete. Violations
/// visible in the first two bytes are reported as soon as they arrive.
pub(super) fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(FrameError::ReservedOpcode(opcode));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let len7 = b1 & 0x7F;
    if opcode & 0x8 != 0 {
        if !fin {
            return Err(FrameError::ControlFragmented);
        }
        if usize::from(len7) > CONTROL_MAX {
            return Err(FrameError::ControlTooLong);
        }
    }
    // A length not in its shortest form (RFC 6455 5.2) is accepted: it is unambiguous and
    // costs nothing to read.
    let (len, rest) = match (len7, rest) {
        (126, [a, b, rest @ ..]) => (u64::from(u16::from_be_bytes([*a, *b])), rest),
        (127, [a, b, c, d, e, f, g, h, rest @ ..]) => {
            let len = u64::from_be_bytes([*a, *b, *c, *d, *e, *f, *g, *h]);
            if len >> 63 != 0 {
                return Err(FrameError::LengthTopBit);
            }
            (len, rest)
        }
        (126 | 127, _) => return Ok(None),
        (n, rest) => (u64::from(n), rest),
    };
    let [m0, m1, m2, m3, ..] = rest else {
        return Ok(None);
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask: [*m0, *m1, *m2, *m3],
        len,
        header_len: buf.len() - rest.len() + 4,
    }))
}

/// Appends a final (FIN) server frame header (unmasked) for a payload of `len` bytes.
pub(super) fn put_header(out: &mut BytesMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(len);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

pub(super) fn put_close(out: &mut BytesMut, code: CloseCode) {
    put_header(out, OP_CLOSE, 2);
    out.put_u16(code.0);
}

/// Appends `payload` unmasked to `out`; `phase` is the payload's offset in its frame mod 4.
pub(super) fn unmask_into(payload: &[u8], mask: [u8; 4], phase: usize, out: &mut BytesMut) {
    let start = out.len();
    out.extend_from_slice(payload);
    let mut rotated = mask;
    rotated.rotate_left(phase % 4);
    unmask(&mut out[start..], rotated);
}

/// XORs `buf` (starting at a multiple of 4 in its frame) with `mask`, 8 bytes at a time.
pub(super) fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let (words, tail) = buf.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ wide).to_ne_bytes();
    }
    // The tail starts at a multiple of 8, so the mask is back in phase.
    for (byte, m) in tail.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 6455 5.7: masked "Hello" (text opcode in the RFC; the header layout is the same).
    #[test]
    fn header_rfc_masked_hello() {
        let h = parse_header(&hex("81 85 37fa213d 7f9f4d5158"))
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                opcode: OP_TEXT,
                mask: [0x37, 0xfa, 0x21, 0x3d],
                len: 5,
                header_len: 6
            }
        );
        let mut payload = hex("7f9f4d5158");
        unmask(&mut payload, h.mask);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn header_extended_lengths() {
        let h = parse_header(&hex("82 FE 0100 01020304")).unwrap().unwrap();
        assert_eq!((h.len, h.header_len), (256, 8));
        let h = parse_header(&hex("82 FF 0000000000010000 01020304"))
            .unwrap()
            .unwrap();
        assert_eq!((h.len, h.header_len), (65536, 14));
        // Incomplete at every cut.
        let full = hex("82 FF 0000000000010000 01020304");
        for cut in 0..full.len() {
            assert_eq!(parse_header(&full[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            parse_header(&hex("82 FF 8000000000000000 01020304")),
            Err(FrameError::LengthTopBit)
        );
    }

    #[test]
    fn header_violations_seen_in_two_bytes() {
        assert_eq!(parse_header(&hex("C2 80")), Err(FrameError::ReservedBits));
        assert_eq!(
            parse_header(&hex("83 80")),
            Err(FrameError::ReservedOpcode(3))
        );
        assert_eq!(parse_header(&hex("82 05")), Err(FrameError::Unmasked));
        assert_eq!(
            parse_header(&hex("09 80")),
            Err(FrameError::ControlFragmented)
        );
        assert_eq!(parse_header(&hex("89 FE")), Err(FrameError::ControlTooLong));
    }

    #[test]
    fn server_header_lengths() {
        let mut out = BytesMut::new();
        put_header(&mut out, OP_BINARY, 125);
        put_header(&mut out, OP_BINARY, 126);
        put_header(&mut out, OP_BINARY, 65535);
        put_header(&mut out, OP_BINARY, 65536);
        assert_eq!(
            &out[..],
            &hex("827D 827E007E 827EFFFF 827F0000000000010000")[..]
        );
    }

    /// Unmasking from any phase and any length matches the byte-at-a-time definition.
    #[test]
    fn unmask_matches_definition() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let plain: Vec<u8> = (0..=255u8).collect();
        let masked: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        for start in 0..9 {
            for end in start..masked.len().min(start + 40) {
                let mut out = BytesMut::from(&b"xy"[..]);
                unmask_into(&masked[start..end], mask, start, &mut out);
                assert_eq!(&out[2..], &plain[start..end], "{start}..{end}");
            }
        }
    }
}
