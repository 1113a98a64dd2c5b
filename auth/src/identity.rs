//! What authentication takes in (a client's credentials) and gives out (an identity or a
//! reason code), shared by every authentication method.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use ringmq_codec::ReasonCode;
use rustls_pki_types::CertificateDer;

/// The credentials of one CONNECT (or AUTH re-authentication).
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// MQTT 5 Authentication Method and Data (enhanced authentication).
    pub auth_method: Option<&'a str>,
    pub auth_data: Option<&'a [u8]>,
    /// The TLS client certificate chain, leaf first; empty without one. The TLS layer has
    /// already checked possession of the leaf's key; chain and name checks happen here.
    pub peer_certificates: &'a [CertificateDer<'static>],
    /// MQTT 5 (reason codes) or 3.1.1 (return codes).
    pub v5: bool,
}

/// A client attribute value (Event Grid client attributes; JWT claims).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttrValue {
    String(String),
    Integer(i64),
    /// An array: a query condition matches when any element does.
    Array(Vec<AttrValue>),
    Bool(bool),
}

pub type Attributes = BTreeMap<String, AttrValue>;

/// How the client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Anonymous,
    Certificate,
    CustomJwt,
    OAuth2Jwt,
    /// A JWT in the CONNECT password (TBMQ/EMQX style).
    PasswordJwt,
    /// Decided by the webhook endpoint (`webhook.rs`).
    Webhook,
    /// User name and password checked against a Mosquitto password file (`passwd.rs`).
    PasswordFile,
}

/// `DEVICE` or `APPLICATION` (TBMQ client types): selects per-type session limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientType {
    #[default]
    Device,
    Application,
}

/// Who an authenticated client is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub method: Method,
    /// The authentication name (Event Grid): the name permissions and topic templates use,
    /// in the case it was registered with.
    pub authentication_name: Arc<str>,
    /// The registered client's resource name, when the client is in the registry.
    pub client_name: Option<Arc<str>>,
    pub attributes: Attributes,
    pub client_type: ClientType,
    /// When the credential stops being valid (a token's `exp`): the broker disconnects the
    /// client then unless it re-authenticates.
    pub expires_at: Option<SystemTime>,
    /// The authentication method name of enhanced authentication (`CUSTOM-JWT`, ...), which
    /// a re-authentication must repeat.
    pub auth_method: Option<Arc<str>>,
    /// JWT claim rules (TBMQ `pub_rules`/`sub_rules`), regular expression sources.
    pub pub_rules: Option<Arc<[String]>>,
    pub sub_rules: Option<Arc<[String]>>,
    /// How claim rules combine with permission bindings: `false` = "restrict" (both must
    /// allow), `true` = "grant" (the rules alone decide; bindings do not apply).
    pub claim_rules_grant: bool,
    /// The OAUTH2-JWT principal (`oid`), for role assignments.
    pub principal_id: Option<Arc<str>>,
}

impl Identity {
    /// The identity of a client the embedded default lets in without credentials.
    pub fn anonymous(client_id: &str) -> Identity {
        Identity {
            method: Method::Anonymous,
            authentication_name: Arc::from(client_id),
            client_name: None,
            attributes: Attributes::new(),
            client_type: ClientType::Device,
            expires_at: None,
            auth_method: None,
            pub_rules: None,
            sub_rules: None,
            claim_rules_grant: false,
            principal_id: None,
        }
    }
}

/// Why a client is refused. The message names the check that failed; it goes in the reason
/// string and the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Bad or unmatched credentials: 0x86 (3.1.1: return code 0x04).
    #[error("bad credentials: {0}")]
    BadCredentials(String),
    /// Valid credentials, not permitted (disabled client, session limit, takeover by another
    /// identity): 0x87 (3.1.1: 0x05).
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// An Authentication Method the broker does not know: 0x8C.
    #[error("bad authentication method: {0}")]
    BadMethod(String),
}

impl AuthError {
    /// The v5 reason code; `ReasonCode::to_v3_connack` gives the 3.1.1 return code.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            AuthError::BadCredentials(_) => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            AuthError::NotAuthorized(_) => ReasonCode::NOT_AUTHORIZED,
            AuthError::BadMethod(_) => ReasonCode::BAD_AUTHENTICATION_METHOD,
        }
    }
}
