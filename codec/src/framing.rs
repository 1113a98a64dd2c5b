//! Counting MQTT packets in a byte stream without decoding them.
//!
//! A load generator's subscribers (ringmq-bench's flood, the end-to-end flood of
//! ringmq-tests) read up to 1 MiB at a time and only need to know how many PUBLISH packets
//! arrived. [`FrameCounter`] walks the fixed headers (type byte, Remaining Length) and
//! skips each body in one step, keeping its place across reads: a read may end anywhere, in a
//! type byte, inside the variable-length Remaining Length, or in a body.
//!
//! What it must never do: assume a read ends on a packet boundary, or buffer a body (memory
//! stays constant however large the packets).

/// Control packet type of PUBLISH (the high nibble of the first byte).
pub const PUBLISH: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// [MQTT-1.5.5-1]: the Remaining Length is at most four bytes.
    #[error("[MQTT-1.5.5] malformed Remaining Length: more than 4 bytes")]
    BadRemainingLength,
    /// [MQTT-2.1.2]: packet type 0 is reserved.
    #[error("[MQTT-2.1.2] reserved packet type 0 (after {frames} complete frames)")]
    ReservedType { frames: u64 },
}

/// Where the counter is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a frame boundary: the next byte is a type byte.
    Type,
    /// Reading the Remaining Length of a frame of `packet_type`: `bytes` of it read so far,
    /// their value `value`.
    Length {
        packet_type: u8,
        value: u32,
        bytes: u8,
    },
    /// Skipping the rest of a frame of `packet_type` (`remaining` > 0 bytes).
    Body { packet_type: u8, remaining: u32 },
}

/// Counts complete frames per packet type across reads.
#[derive(Debug, Clone)]
pub struct FrameCounter {
    state: State,
    /// Complete frames per control packet type (index = type, 0..=15).
    frames: [u64; 16],
    /// A malformed stream: the counter stops counting, as a broker would close.
    failed: Option<FrameError>,
}

impl Default for FrameCounter {
    fn default() -> Self {
        FrameCounter {
            state: State::Type,
            frames: [0; 16],
            failed: None,
        }
    }
}

impl FrameCounter {
    pub fn new() -> FrameCounter {
        FrameCounter::default()
    }

    /// Consumes `bytes` (the next part of the stream) and returns how many frames it
    /// completed. After an error the stream cannot be resynchronised: every later call
    /// returns the same error.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<u64, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let before = self.total();
        let mut at = 0;
        // Each turn consumes at least one byte (a body skip consumes up to the whole body), so
        // the loop is bounded by `bytes.len()`.
        while at < bytes.len() {
            match self.state {
                State::Type => {
                    let packet_type = bytes[at] >> 4;
                    at += 1;
                    if packet_type == 0 {
                        return Err(self.fail(FrameError::ReservedType {
                            frames: self.total(),
                        }));
                    }
                    self.state = State::Length {
                        packet_type,
                        value: 0,
                        bytes: 0,
                    };
                }
                State::Length {
                    packet_type,
                    value,
                    bytes: read,
                } => {
                    let byte = bytes[at];
                    at += 1;
                    let value = value | u32::from(byte & 0x7F) << (7 * u32::from(read));
                    if byte & 0x80 == 0 {
                        self.start_body(packet_type, value);
                    } else if read + 1 == 4 {
                        return Err(self.fail(FrameError::BadRemainingLength));
                    } else {
                        self.state = State::Length {
                            packet_type,
                            value,
                            bytes: read + 1,
                        };
                    }
                }
                State::Body {
                    packet_type,
                    remaining,
                } => {
                    let available = bytes.len() - at;
                    let skip = available.min(remaining as usize);
                    at += skip;
                    // `skip` ≤ `remaining`, a u32.
                    self.start_body(packet_type, remaining - skip as u32);
                }
            }
        }
        Ok(self.total() - before)
    }

    /// Complete frames of `packet_type` (e.g. [`PUBLISH`]) so far.
    pub fn frames(&self, packet_type: u8) -> u64 {
        self.frames[usize::from(packet_type & 0x0F)]
    }

    /// Complete frames of every type so far.
    pub fn total(&self) -> u64 {
        self.frames.iter().sum()
    }

    /// Whether the stream so far ended on a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.state == State::Type
    }

    fn start_body(&mut self, packet_type: u8, remaining: u32) {
        if remaining == 0 {
            self.complete(packet_type);
        } else {
            self.state = State::Body {
                packet_type,
                remaining,
            };
        }
    }

    fn complete(&mut self, packet_type: u8) {
        self.frames[usize::from(packet_type)] += 1;
        self.state = State::Type;
    }

    fn fail(&mut self, err: FrameError) -> FrameError {
        self.failed = Some(err.clone());
        err
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::{Packet, ProtocolVersion, Publish, QosPid, Str};
    use bytes::{Bytes, BytesMut};

    /// A stream of frames whose fixed headers and bodies have every length class: PUBLISH with a
    /// 1-byte and a 2-byte Remaining Length, a zero-length PINGRESP, a SUBACK, and a PUBLISH
    /// whose Remaining Length needs 3 bytes (≥ 16 384).
    fn stream() -> (Vec<u8>, [u64; 16]) {
        let mut out = BytesMut::new();
        let v5 = ProtocolVersion::V5;
        let publish = |out: &mut BytesMut, payload: usize| {
            let p = Packet::Publish(Publish {
                dup: false,
                qos_pid: QosPid::AtMostOnce,
                retain: false,
                topic: Str::from_static("t/1"),
                properties: Default::default(),
                payload: Bytes::from(vec![b'x'; payload]),
            });
            crate::encode(&p, v5, out).unwrap_or_else(|e| panic!("{e}"))
        };
        publish(&mut out, 8);
        publish(&mut out, 200);
        out.extend_from_slice(&[0xD0, 0x00]); // PINGRESP
        out.extend_from_slice(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x00]); // SUBACK id 1, granted QoS 0
        publish(&mut out, 20_000);
        publish(&mut out, 0);
        let mut want = [0u64; 16];
        want[usize::from(PUBLISH)] = 4;
        want[13] = 1;
        want[9] = 1;
        (out.to_vec(), want)
    }

    fn counts(c: &FrameCounter) -> [u64; 16] {
        let mut out = [0; 16];
        for (t, n) in out.iter_mut().enumerate() {
            *n = c.frames(t as u8);
        }
        out
    }

    #[test]
    fn whole_stream_in_one_read() {
        let (bytes, want) = stream();
        let mut c = FrameCounter::new();
        assert_eq!(c.feed(&bytes), Ok(6));
        assert_eq!(counts(&c), want);
        assert!(c.at_boundary());
    }

    #[test]
    fn split_at_every_offset() {
        let (bytes, want) = stream();
        for cut in 0..=bytes.len() {
            let mut c = FrameCounter::new();
            let first = c.feed(&bytes[..cut]).unwrap_or_else(|e| panic!("{e}"));
            let second = c.feed(&bytes[cut..]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(first + second, 6, "cut at {cut}");
            assert_eq!(counts(&c), want, "cut at {cut}");
            assert!(c.at_boundary(), "cut at {cut}");
        }
    }

    /// Two cuts at every pair of offsets within the small frames (the large body would make
    /// this quadratic in 20 000): a read may also end inside a multi-byte Remaining Length and
    /// the next one end before the body starts.
    #[test]
    fn split_at_every_pair_of_offsets_in_the_headers() {
        let (bytes, want) = stream();
        let small = 300;
        for a in 0..small {
            for b in a..small {
                let mut c = FrameCounter::new();
                let mut total = 0;
                for part in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    total += c.feed(part).unwrap_or_else(|e| panic!("{e}"));
                }
                assert_eq!(total, 6, "cuts at {a}, {b}");
                assert_eq!(counts(&c), want, "cuts at {a}, {b}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let (bytes, want) = stream();
        let mut c = FrameCounter::new();
        let mut total = 0;
        for b in &bytes {
            total += c
                .feed(std::slice::from_ref(b))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(total, 6);
        assert_eq!(counts(&c), want);
    }

    #[test]
    fn a_partial_frame_is_not_counted() {
        let (bytes, _) = stream();
        let mut c = FrameCounter::new();
        // The first PUBLISH is 2 + 2 + 3 + 1 + 8 = 16 bytes.
        assert_eq!(c.feed(&bytes[..15]), Ok(0));
        assert!(!c.at_boundary());
        assert_eq!(c.feed(&bytes[15..16]), Ok(1));
        assert!(c.at_boundary());
    }

    #[test]
    fn largest_remaining_length_is_accepted() {
        // 268 435 455 = 0xFF 0xFF 0xFF 0x7F: the body is never buffered, only skipped.
        let mut c = FrameCounter::new();
        assert_eq!(c.feed(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]), Ok(0));
        assert!(!c.at_boundary());
        assert_eq!(c.feed(&[0; 1024]), Ok(0));
    }

    #[test]
    fn malformed_streams_are_errors_and_stay_errors() {
        let mut c = FrameCounter::new();
        assert_eq!(
            c.feed(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(FrameError::BadRemainingLength)
        );
        assert_eq!(c.feed(&[0xD0, 0x00]), Err(FrameError::BadRemainingLength));
        let mut c = FrameCounter::new();
        assert_eq!(
            c.feed(&[0xD0, 0x00, 0x00]),
            Err(FrameError::ReservedType { frames: 1 })
        );
    }
}
