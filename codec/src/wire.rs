//! Wire primitives shared by the decoder and the encoder: a bounds-checked reader over a frozen
//! frame, the Variable Byte Integer, and a `Sink` that either counts or writes bytes so every
//! packet has one body writer used twice (first to size the packet, then to write it).

use core::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::props::{WriteProps, props_len};
use crate::str::StrError;
use crate::{DecodeError, EncodeError, Str};

/// The largest value a Variable Byte Integer can hold (4 bytes) [MQTT-1.5.5-1].
pub(crate) const VARINT_MAX: u32 = 268_435_455;

/// Statement for a field that overruns the remaining length, or bytes left over after the last
/// field: the Remaining Length disagrees with the content (MQTT 5.0 section 2.1.4).
pub(crate) const REMAINING_LENGTH: &str = "MQTT-2.1.4";

pub(crate) fn overrun() -> DecodeError {
    DecodeError::malformed(REMAINING_LENGTH, "field overruns the remaining length")
}

pub(crate) fn trailing() -> DecodeError {
    DecodeError::malformed(
        REMAINING_LENGTH,
        "bytes left after the last field of the packet",
    )
}

pub(crate) fn str_error(e: StrError) -> DecodeError {
    match e {
        StrError::InvalidUtf8 => {
            DecodeError::malformed("MQTT-1.5.4-1", "string is not well-formed UTF-8")
        }
        StrError::NullCharacter => DecodeError::malformed("MQTT-1.5.4-2", "string contains U+0000"),
        StrError::TooLong => {
            DecodeError::malformed("MQTT-1.5.4-1", "string longer than 65535 bytes")
        }
    }
}

/// Parses a Variable Byte Integer at `buf[*pos..]`. `Ok(None)` when `buf` ends before its last
/// byte. Rejects more than 4 bytes and non-minimal encodings [MQTT-1.5.5-1].
pub(crate) fn parse_varint(buf: &[u8], pos: &mut usize) -> Result<Option<u32>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(*pos + i) else {
            return Ok(None);
        };
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(DecodeError::malformed(
                    "MQTT-1.5.5-1",
                    "variable byte integer not encoded in the minimum number of bytes",
                ));
            }
            *pos += i + 1;
            return Ok(Some(value));
        }
    }
    Err(DecodeError::malformed(
        "MQTT-1.5.5-1",
        "variable byte integer longer than 4 bytes",
    ))
}

/// Number of bytes the Variable Byte Integer encoding of `value` takes.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A cursor over `frame[pos..end]`. Every read is bounds-checked and fails as malformed.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(frame: &'a Bytes, pos: usize, end: usize) -> Reader<'a> {
        debug_assert!(pos <= end && end <= frame.len());
        Reader { frame, pos, end }
    }

    pub(crate) fn frame(&self) -> &'a Bytes {
        self.frame
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// Fails unless every byte of the packet has been consumed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(trailing())
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.frame.get(self.pos..self.end).unwrap_or_default()
    }

    /// Consumes `n` bytes and returns their absolute range in the frame.
    pub(crate) fn take(&mut self, n: usize) -> Result<Range<usize>, DecodeError> {
        if self.end - self.pos < n {
            return Err(overrun());
        }
        let range = self.pos..self.pos + n;
        self.pos += n;
        Ok(range)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes().first().ok_or_else(overrun)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        match *self.bytes() {
            [a, b, ..] => {
                self.pos += 2;
                Ok(u16::from_be_bytes([a, b]))
            }
            _ => Err(overrun()),
        }
    }

    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut pos = 0;
        let value = parse_varint(self.bytes(), &mut pos)?.ok_or_else(overrun)?;
        self.pos += pos;
        Ok(value)
    }

    /// Binary Data: a two-byte length and that many bytes, as a slice of the frame.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        let range = self.take(usize::from(len))?;
        Ok(self.frame.slice(range))
    }

    /// A UTF-8 Encoded String, validated [MQTT-1.5.4-1], [MQTT-1.5.4-2].
    pub(crate) fn string(&mut self) -> Result<Str, DecodeError> {
        Str::from_bytes(self.binary()?).map_err(str_error)
    }

    /// Everything left, as a slice of the frame.
    pub(crate) fn rest(&mut self) -> Bytes {
        let range = self.pos..self.end;
        self.pos = self.end;
        self.frame.slice(range)
    }

    /// Everything left, as borrowed bytes.
    pub(crate) fn rest_slice(&mut self) -> &'a [u8] {
        let rest = self.bytes();
        self.pos = self.end;
        rest
    }
}

/// Where encoded bytes go: a [`Counter`] while sizing, the output buffer while writing.
pub(crate) trait Sink {
    fn push_u8(&mut self, v: u8);
    fn push_u16(&mut self, v: u16);
    fn push_u32(&mut self, v: u32);
    fn push_slice(&mut self, s: &[u8]);
    /// A property block: Property Length, then the properties. The counter sizes the block
    /// once; the buffer sizes it, then writes it.
    fn props<P: WriteProps>(&mut self, props: &P) -> Result<(), EncodeError>;
}

/// Counts the bytes a body would take.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn push_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn push_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn push_u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn push_slice(&mut self, s: &[u8]) {
        self.0 += s.len();
    }
    fn props<P: WriteProps>(&mut self, props: &P) -> Result<(), EncodeError> {
        let len = props_len(props)?;
        self.0 += varint_len(len) + len;
        Ok(())
    }
}

impl Sink for BytesMut {
    fn push_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn push_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    fn push_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v);
    }
    fn push_slice(&mut self, s: &[u8]) {
        BufMut::put_slice(self, s);
    }
    fn props<P: WriteProps>(&mut self, props: &P) -> Result<(), EncodeError> {
        put_varint(self, checked_varint(props_len(props)?)?);
        props.write(self)
    }
}

/// Writes a Variable Byte Integer; `value` must be at most [`VARINT_MAX`] (callers check).
pub(crate) fn put_varint<S: Sink>(s: &mut S, value: u32) {
    debug_assert!(value <= VARINT_MAX);
    let mut v = value;
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            s.push_u8(byte);
            return;
        }
        s.push_u8(byte | 0x80);
    }
}

/// Writes a two-byte length and `bytes`; fails if `bytes` is longer than 65535.
pub(crate) fn put_binary<S: Sink>(
    s: &mut S,
    field: &'static str,
    bytes: &[u8],
) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: bytes.len(),
    })?;
    s.push_u16(len);
    s.push_slice(bytes);
    Ok(())
}

/// A length as a Variable Byte Integer value, or `PacketTooLarge`.
pub(crate) fn checked_varint(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len)
        .ok()
        .filter(|&v| v <= VARINT_MAX)
        .ok_or(EncodeError::PacketTooLarge { len })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn enc(v: u32) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_varint(&mut b, v);
        b.to_vec()
    }

    #[test]
    fn varint_boundaries_round_trip() {
        for (v, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (2_097_151, 3),
            (2_097_152, 4),
            (VARINT_MAX, 4),
        ] {
            let bytes = enc(v);
            assert_eq!(bytes.len(), len, "{v}");
            assert_eq!(varint_len(v as usize), len);
            let mut pos = 0;
            assert_eq!(parse_varint(&bytes, &mut pos), Ok(Some(v)));
            assert_eq!(pos, len);
        }
        assert_eq!(enc(321), vec![0xC1, 0x02]);
    }

    #[test]
    fn varint_rejects_five_bytes_and_non_minimal() {
        let mut pos = 0;
        let e = parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F], &mut pos).unwrap_err();
        assert_eq!(e.statement(), "MQTT-1.5.5-1");
        let e = parse_varint(&[0x80, 0x00], &mut pos).unwrap_err();
        assert_eq!(e.statement(), "MQTT-1.5.5-1");
        assert_eq!(parse_varint(&[0x80, 0x80], &mut pos), Ok(None));
        assert_eq!(pos, 0);
    }
}
