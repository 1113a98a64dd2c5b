//! `Str`: an MQTT UTF-8 Encoded String held as a `Bytes` slice of the frame it arrived in.

use core::fmt;

use bytes::Bytes;

/// A well-formed MQTT UTF-8 string [MQTT-1.5.4-1..3]: valid UTF-8 without U+0000, at most
/// 65 535 bytes. Cheap to clone (a reference count). Surrogates cannot occur in valid UTF-8.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Str(Bytes);

impl Str {
    /// Validates `bytes` as an MQTT string.
    pub fn from_bytes(bytes: Bytes) -> Result<Str, StrError> {
        validate(&bytes)?;
        Ok(Str(bytes))
    }

    /// A string from a literal; panics on an invalid literal (a programming error, never input).
    pub fn from_static(s: &'static str) -> Str {
        assert!(
            validate(s.as_bytes()).is_ok(),
            "invalid MQTT string literal {s:?}"
        );
        Str(Bytes::from_static(s.as_bytes()))
    }

    /// Copies `s` into a new string.
    pub fn copy_from(s: &str) -> Result<Str, StrError> {
        validate(s.as_bytes())?;
        Ok(Str(Bytes::copy_from_slice(s.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        // The constructor validated the bytes, so this cannot fail.
        debug_assert!(core::str::from_utf8(&self.0).is_ok());
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_bytes_shared(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why bytes are not an MQTT string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StrError {
    #[error("[MQTT-1.5.4-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    #[error("[MQTT-1.5.4-2] string contains U+0000")]
    NullCharacter,
    #[error("[MQTT-1.5.4-1] string is longer than 65535 bytes")]
    TooLong,
}

fn validate(bytes: &[u8]) -> Result<(), StrError> {
    if bytes.len() > usize::from(u16::MAX) {
        return Err(StrError::TooLong);
    }
    // Rust's UTF-8 validation rejects surrogates (U+D800..U+DFFF) and overlong forms.
    core::str::from_utf8(bytes).map_err(|_| StrError::InvalidUtf8)?;
    if bytes.contains(&0) {
        return Err(StrError::NullCharacter);
    }
    Ok(())
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<[u8]> for Str {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
