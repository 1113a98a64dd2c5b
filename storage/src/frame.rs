//! The on-disk framing of records and segment headers (docs/storage.md, "Record format").
//!
//! Everything little endian. Decoding never trusts a length before checking it against the
//! bytes that are there, and reports what is wrong instead of panicking.

/// `crc32c u32 | len u32 | seq u64 | kind u8 | 3 zero bytes`, then `len` payload bytes.
pub(crate) const RECORD_HEADER_BYTES: usize = 20;
/// `magic [8] | crc32c u32 | version u32 | shard u32 | zero u32 | segment u64 | first_seq u64`.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 40;

const SEGMENT_MAGIC: &[u8; 8] = b"RINGMQWL";
pub(crate) const FORMAT_VERSION: u32 = 1;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A payload of the core's.
    Data = 1,
    /// Opens a snapshot; empty payload.
    SnapshotBegin = 2,
    /// Closes the snapshot opened by the begin marker whose sequence number is the payload (u64).
    SnapshotEnd = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Data),
            2 => Some(Kind::SnapshotBegin),
            3 => Some(Kind::SnapshotEnd),
            _ => None,
        }
    }
}

/// Appends one framed record to `buf` (no allocation if `buf` has the capacity).
pub(crate) fn encode_record(buf: &mut Vec<u8>, seq: u64, kind: Kind, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    debug_assert_eq!(len as usize, payload.len(), "caller checks the record size");
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[kind as u8, 0, 0, 0]);
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A record read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    pub seq: u64,
    pub kind: Kind,
    pub payload: &'a [u8],
    /// Bytes of the whole frame.
    pub frame_len: usize,
}

/// Why the bytes at a position are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Fewer bytes than a header left in the segment's valid range; all zero or not.
    ShortHeader { zero: bool },
    /// A header of zeros: the preallocated, never written part of a segment.
    Zero,
    /// The length runs past the end of the segment.
    Length { len: u64 },
    /// The checksum does not match.
    Crc,
    /// Unknown kind byte or non-zero padding.
    Kind { kind: u8 },
    /// A valid frame with the wrong sequence number (stale data).
    Sequence { found: u64 },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the record at the start of `b` (the rest of the segment), which must have sequence
/// number `expected_seq`.
pub(crate) fn decode_record(b: &[u8], expected_seq: u64) -> Result<Decoded<'_>, Bad> {
    if b.len() < RECORD_HEADER_BYTES {
        return Err(Bad::ShortHeader {
            zero: b.iter().all(|&x| x == 0),
        });
    }
    let header = &b[..RECORD_HEADER_BYTES];
    if header.iter().all(|&x| x == 0) {
        return Err(Bad::Zero);
    }
    let crc = u32_at(b, 0);
    let len = u64::from(u32_at(b, 4));
    let end = RECORD_HEADER_BYTES as u64 + len;
    if end > b.len() as u64 {
        return Err(Bad::Length { len });
    }
    let end = end as usize;
    if crc32c::crc32c(&b[4..end]) != crc {
        return Err(Bad::Crc);
    }
    let kind_byte = b[16];
    let kind = match Kind::from_byte(kind_byte) {
        Some(k) if b[17..20] == [0, 0, 0] => k,
        _ => return Err(Bad::Kind { kind: kind_byte }),
    };
    let seq = u64_at(b, 8);
    if seq != expected_seq {
        return Err(Bad::Sequence { found: seq });
    }
    Ok(Decoded {
        seq,
        kind,
        payload: &b[RECORD_HEADER_BYTES..end],
        frame_len: end,
    })
}

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub shard: u32,
    pub segment: u64,
    /// Sequence number of the segment's first record.
    pub first_seq: u64,
}

pub(crate) fn encode_segment_header(buf: &mut Vec<u8>, h: SegmentHeader) {
    let start = buf.len();
    buf.extend_from_slice(SEGMENT_MAGIC);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&h.shard.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&h.segment.to_le_bytes());
    buf.extend_from_slice(&h.first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&buf[start + 12..start + SEGMENT_HEADER_BYTES]);
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a segment header; the error says what is wrong.
pub(crate) fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, &'static str> {
    if b.len() < SEGMENT_HEADER_BYTES {
        return Err("shorter than a segment header");
    }
    if b[..SEGMENT_HEADER_BYTES].iter().all(|&x| x == 0) {
        return Err("segment header never written (zeros)");
    }
    if &b[..8] != SEGMENT_MAGIC {
        return Err("not a ringmq log segment (bad magic)");
    }
    if crc32c::crc32c(&b[12..SEGMENT_HEADER_BYTES]) != u32_at(b, 8) {
        return Err("segment header checksum mismatch");
    }
    if u32_at(b, 12) != FORMAT_VERSION {
        return Err("unknown segment format version");
    }
    Ok(SegmentHeader {
        shard: u32_at(b, 16),
        segment: u64_at(b, 24),
        first_seq: u64_at(b, 32),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_vector() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, Kind::Data, b"hi");
        assert_eq!(buf.len(), RECORD_HEADER_BYTES + 2);
        // len 2, seq 7, kind 1, padding, payload "hi".
        assert_eq!(
            &buf[4..],
            &[2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'h', b'i']
        );
        assert_eq!(
            u32_at(&buf, 0),
            crc32c::crc32c(&buf[4..]),
            "crc covers the rest"
        );
        let d = decode_record(&buf, 7).unwrap();
        assert_eq!(
            (d.seq, d.kind, d.payload, d.frame_len),
            (7, Kind::Data, &b"hi"[..], 22)
        );
        assert_eq!(decode_record(&buf, 8), Err(Bad::Sequence { found: 7 }));
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, Kind::SnapshotEnd, &9u64.to_le_bytes());
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(decode_record(&b, 1).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn short_zero_and_overlong() {
        assert_eq!(
            decode_record(&[0; 5], 1),
            Err(Bad::ShortHeader { zero: true })
        );
        assert_eq!(decode_record(&[0; 64], 1), Err(Bad::Zero));
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, Kind::Data, &[1; 10]);
        assert_eq!(
            decode_record(&buf[..buf.len() - 1], 1),
            Err(Bad::Length { len: 10 })
        );
    }

    #[test]
    fn segment_header_round_trip() {
        let h = SegmentHeader {
            shard: 3,
            segment: 12,
            first_seq: 99,
        };
        let mut buf = Vec::new();
        encode_segment_header(&mut buf, h);
        assert_eq!(buf.len(), SEGMENT_HEADER_BYTES);
        assert_eq!(decode_segment_header(&buf), Ok(h));
        buf[30] ^= 1;
        assert!(decode_segment_header(&buf).is_err());
        assert!(decode_segment_header(&[0; SEGMENT_HEADER_BYTES]).is_err());
    }
}
