//! ringmq-codec: a sans-IO, zero-copy codec for MQTT 5.0 and 3.1.1 (and 3.1 CONNECT).
//!
//! What it is for: turning bytes into [`Packet`]s and back, validating everything the
//! specification says a receiver must check, and naming the normative statement and v5 reason
//! code of every violation ([`DecodeError`]).
//!
//! What it must never do: perform I/O, depend on a runtime, panic on any input, allocate while
//! decoding a PUBLISH or encoding a PUBLISH header, or buffer a body larger than
//! [`Limits::max_packet_size`] (the fixed header is checked first).
//!
//! Decoding: [`decode`] takes the connection's receive buffer; a frame that is not yet complete
//! is `Ok(None)` and leaves the buffer as it was. A complete frame is split off the buffer and
//! frozen, and every string, binary field, topic and payload of the packet is a `Bytes` slice of
//! it. Encoding: [`encode`] appends to a caller's `BytesMut`; [`PublishHeader::encode`] writes
//! only a PUBLISH's header, so one payload can be sent to many subscribers with vectored writes.
//! [`encode_within`] encodes within the receiver's Maximum Packet Size, leaving out the Reason
//! String and User Properties a packet may go without [MQTT-3.1.2-25].

#![forbid(unsafe_code)]

mod decode;
mod encode;
mod error;
mod fit;
pub mod framing;
mod packet;
mod props;
mod reason;
mod str;
pub mod topic;
mod wire;

pub use decode::{decode, peek_frame_len};
pub use encode::encode;
pub use error::{DecodeError, EncodeError};
pub use fit::{Omitted, encode_within};
pub use packet::*;
pub use reason::ReasonCode;
pub use str::Str;

/// Receive limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest packet accepted, fixed header included [MQTT-3.1.2-24]. Checked on the fixed
    /// header, before the body is buffered.
    pub max_packet_size: u32,
}

impl Limits {
    /// The protocol's own ceiling: 1 type byte + 4 length bytes + 268 435 455.
    pub const PROTOCOL_MAX_PACKET_SIZE: u32 = 268_435_460;
}

impl Default for Limits {
    /// 1 MiB: large enough for ordinary telemetry and commands, small enough that a hostile
    /// peer cannot make the broker buffer much.
    fn default() -> Self {
        Limits {
            max_packet_size: 1024 * 1024,
        }
    }
}
