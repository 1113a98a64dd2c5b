//! The MQTT packets the load generator sends, built with ringmq-codec.

use core::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use ringmq_codec::{
    Connect, ConnectProperties, EncodeError, Packet, ProtocolVersion, PubResp, PublishHeader, QoS,
    QosPid, ReasonCode, Str, Subscribe, SubscribeFilter, SubscriptionOptions, UserProperties,
    encode,
};

use crate::config::LoadConfig;
use crate::template;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// (The codec does not export its `StrError`, so the reason is kept as text.)
    #[error("{what} is not a valid MQTT string: {reason}")]
    BadString { what: &'static str, reason: String },
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

fn mqtt_str(what: &'static str, s: &str) -> Result<Str, WireError> {
    Str::copy_from(s).map_err(|e| WireError::BadString {
        what,
        reason: e.to_string(),
    })
}

/// The per-client fields of one CONNECT, with `%i` expanded to the connection number: built
/// once when the client connects, never per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth_data: Option<String>,
}

impl Credentials {
    /// The fields of connection number `connection`: `--client-id` (else `default_id`), `-u`,
    /// `-P` and `--auth-data`, each template expanded.
    pub fn new(
        cfg: &LoadConfig,
        connection: u32,
        default_id: impl FnOnce() -> String,
    ) -> Credentials {
        let expand = |t: &Option<String>| t.as_deref().map(|t| template::expand(t, connection));
        Credentials {
            client_id: expand(&cfg.client_id).unwrap_or_else(default_id),
            username: expand(&cfg.username),
            password: expand(&cfg.password),
            auth_data: expand(&cfg.auth_data),
        }
    }
}

/// CONNECT with the configuration's protocol, keep alive and auth method, and this client's
/// id and credentials. Clean start, no session expiry: the benchmark never resumes sessions.
pub fn connect(cfg: &LoadConfig, creds: &Credentials, out: &mut BytesMut) -> Result<(), WireError> {
    let properties = ConnectProperties {
        authentication_method: cfg
            .auth_method
            .as_deref()
            .map(|m| mqtt_str("--auth-method", m))
            .transpose()?,
        authentication_data: creds
            .auth_data
            .as_ref()
            .map(|d| Bytes::copy_from_slice(d.as_bytes())),
        ..ConnectProperties::default()
    };
    let connect = Connect {
        protocol: cfg.protocol,
        clean_start: true,
        keep_alive_secs: cfg.keep_alive_secs,
        properties,
        client_id: mqtt_str("client id", &creds.client_id)?,
        will: None,
        username: creds
            .username
            .as_deref()
            .map(|u| mqtt_str("--username", u))
            .transpose()?,
        password: creds
            .password
            .as_ref()
            .map(|p| Bytes::copy_from_slice(p.as_bytes())),
    };
    encode(&Packet::Connect(Box::new(connect)), cfg.protocol, out)?;
    Ok(())
}

/// SUBSCRIBE to one filter.
pub fn subscribe(
    version: ProtocolVersion,
    packet_id: NonZeroU16,
    filter: &str,
    qos: QoS,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let subscribe = Subscribe {
        packet_id,
        subscription_id: None,
        user_properties: UserProperties::new(),
        filters: vec![SubscribeFilter {
            filter: mqtt_str("topic filter", filter)?,
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }],
    };
    encode(&Packet::Subscribe(subscribe), version, out)?;
    Ok(())
}

/// Appends a PUBLISH of `payload` to `topic` (header through the codec, payload copied after).
pub fn publish(
    version: ProtocolVersion,
    topic: &str,
    qos_pid: QosPid,
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let header = PublishHeader {
        dup: false,
        qos_pid,
        retain: false,
        topic: topic.as_bytes(),
        topic_alias: None,
        message_expiry_secs: None,
        subscription_ids: &[],
        forwarded: None,
    };
    header.encode(version, payload.len(), out)?;
    out.extend_from_slice(payload);
    Ok(())
}

/// Appends a successful PUBACK.
pub fn puback(
    version: ProtocolVersion,
    packet_id: NonZeroU16,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    encode(
        &Packet::PubAck(PubResp::new(packet_id, ReasonCode::SUCCESS)),
        version,
        out,
    )?;
    Ok(())
}

/// Appends a normal DISCONNECT.
pub fn disconnect(version: ProtocolVersion, out: &mut BytesMut) -> Result<(), WireError> {
    encode(&Packet::Disconnect(Default::default()), version, out)?;
    Ok(())
}

/// Packet identifiers 1, 2, …, 65535, 1, …
#[derive(Debug, Clone, Default)]
pub struct PacketIds(u16);

impl PacketIds {
    pub fn next_id(&mut self) -> NonZeroU16 {
        self.0 = self.0.checked_add(1).unwrap_or(1);
        NonZeroU16::new(self.0).unwrap_or(NonZeroU16::MIN)
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_wrap_and_skip_zero() {
        let mut ids = PacketIds(65534);
        assert_eq!(ids.next_id().get(), 65535);
        assert_eq!(ids.next_id().get(), 1);
        assert_eq!(ids.next_id().get(), 2);
        assert_eq!(PacketIds::default().next_id().get(), 1);
    }
}
