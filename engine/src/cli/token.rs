//! `ringmq token`: mints a signed JWT for tests and first steps, from a key file (an HMAC
//! secret, or a PEM private key: RSA, EC P-256/P-384, Ed25519), an issuer, an audience, a
//! subject, a lifetime and extra claims. The broker verifies it with the matching registry
//! entry (`hmacSecrets`, or the public key in `issuerCertificates`; docs/authentication.md).
//!
//! Signing is jsonwebtoken's (the library the broker verifies with), so a token this makes and
//! the broker refuses points at the registry, not at the encoder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    RsaKeyPair,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};

/// Longest `--lifetime` accepted (ten years): a test token, not a credential to keep.
const LIFETIME_SECS_MAX: u64 = 10 * 365 * 24 * 3600;
/// Largest key file read.
const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// `ringmq token`'s options.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Key file: a PEM private key (RSA, EC P-256/P-384, Ed25519; PKCS#8, PKCS#1 or SEC1), or
    /// an HMAC secret (the file's bytes, without a final newline: what is in `hmacSecrets`).
    #[arg(long, short)]
    pub key: PathBuf,
    /// Signature algorithm; by default the key's (HS256, RS256, ES256, ES384, EdDSA).
    #[arg(long)]
    pub alg: Option<String>,
    /// `iss`: the registry's `tokenIssuer` (CUSTOM-JWT) or one of `tokenIssuers` (OAUTH2-JWT).
    #[arg(long, short)]
    pub issuer: String,
    /// `aud` (repeatable: several make an array).
    #[arg(long, short)]
    pub audience: Vec<String>,
    /// `sub`: the authentication name (CUSTOM-JWT, password tokens).
    #[arg(long, short)]
    pub subject: Option<String>,
    /// Time until `exp`: seconds, or a number with s, m, h or d (`90s`, `15m`, `1h`, `7d`).
    #[arg(long, short, default_value = "1h")]
    pub lifetime: String,
    /// `kid` in the header (to pick a key of a JWKS).
    #[arg(long)]
    pub kid: Option<String>,
    /// An extra claim NAME=VALUE (repeatable). VALUE is read as JSON when it is JSON (numbers,
    /// true/false, arrays, objects, "quoted strings"), as a string otherwise. Applied last, so
    /// it may replace iss, aud, sub, iat or exp.
    #[arg(long = "claim", short = 'c', value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
}

/// Runs `ringmq token`: the token on stdout, problems on stderr (exit status 1).
pub fn run(args: &TokenArgs) -> ExitCode {
    match mint(args, unix_now()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringmq token: {e}");
            ExitCode::from(1)
        }
    }
}

/// The signed token for `args`, issued at `now` (Unix seconds).
pub fn mint(args: &TokenArgs, now: u64) -> Result<String, String> {
    let lifetime = parse_lifetime(&args.lifetime)?;
    let key_file = read_key_file(&args.key)?;
    let key = SigningKey::from_file_bytes(&key_file)
        .map_err(|e| format!("{}: {e}", args.key.display()))?;
    let alg = match &args.alg {
        None => key.default_algorithm(),
        Some(name) => name
            .parse::<Algorithm>()
            .map_err(|_| format!("--alg {name:?}: not an algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"))?,
    };
    let encoding = key
        .encoding_key(alg)
        .map_err(|e| format!("{}: {e}", args.key.display()))?;
    let claims = claims(args, now, lifetime)?;
    let mut header = Header::new(alg);
    header.kid.clone_from(&args.kid);
    jsonwebtoken::encode(&header, &Value::Object(claims), &encoding)
        .map_err(|e| format!("cannot sign with {alg:?}: {e}"))
}

fn claims(args: &TokenArgs, now: u64, lifetime: u64) -> Result<Map<String, Value>, String> {
    let mut claims = Map::new();
    claims.insert("iss".into(), Value::from(args.issuer.clone()));
    match args.audience.as_slice() {
        [] => {}
        [one] => {
            claims.insert("aud".into(), Value::from(one.clone()));
        }
        many => {
            claims.insert("aud".into(), Value::from(many.to_vec()));
        }
    }
    if let Some(sub) = &args.subject {
        claims.insert("sub".into(), Value::from(sub.clone()));
    }
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now.saturating_add(lifetime)));
    for claim in &args.claims {
        let (name, value) = parse_claim(claim)?;
        claims.insert(name, value);
    }
    Ok(claims)
}

/// `NAME=VALUE`: VALUE as JSON when it parses, else as a string.
fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let Some((name, raw)) = text.split_once('=') else {
        return Err(format!("--claim {text:?}: expected NAME=VALUE"));
    };
    if name.is_empty() {
        return Err(format!("--claim {text:?}: the claim name is empty"));
    }
    let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::from(raw));
    Ok((name.to_owned(), value))
}

/// `3600`, `90s`, `15m`, `2h`, `7d` → seconds.
fn parse_lifetime(text: &str) -> Result<u64, String> {
    let bad = || format!("--lifetime {text:?}: expected seconds or a number with s, m, h or d");
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    if secs > LIFETIME_SECS_MAX {
        return Err(format!(
            "--lifetime {text:?}: longer than ten years; this makes test tokens"
        ));
    }
    Ok(secs)
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > KEY_FILE_BYTES_MAX {
        return Err(format!(
            "{}: larger than {KEY_FILE_BYTES_MAX} bytes: not a key",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A key read from a file, classified by what it is.
#[derive(Debug)]
enum SigningKey {
    Hmac(Vec<u8>),
    /// The PEM file (PKCS#1 or PKCS#8), as jsonwebtoken reads it.
    Rsa(Vec<u8>),
    /// PKCS#8 DER, with the curve's algorithm.
    Ec(Vec<u8>, Algorithm),
    /// PKCS#8 DER.
    Ed25519(Vec<u8>),
}

impl SigningKey {
    fn from_file_bytes(bytes: &[u8]) -> Result<SigningKey, String> {
        let text = String::from_utf8_lossy(bytes);
        if !text.contains("-----BEGIN") {
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            if secret.is_empty() {
                return Err("empty: an HMAC secret file holds the secret".into());
            }
            return Ok(SigningKey::Hmac(secret.as_bytes().to_vec()));
        }
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY") {
            return Err(
                "an encrypted private key: decrypt it first (openssl pkcs8 -in KEY -out PLAIN)"
                    .into(),
            );
        }
        let der =
            PrivateKeyDer::from_pem_slice(bytes).map_err(|e| format!("no PEM private key: {e}"))?;
        match der {
            PrivateKeyDer::Pkcs1(_) => Ok(SigningKey::Rsa(bytes.to_vec())),
            PrivateKeyDer::Sec1(sec1) => {
                // jsonwebtoken reads PKCS#8 only: convert (what `openssl ecparam -genkey` wrote).
                for (curve, alg) in [
                    (&ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256),
                    (&ECDSA_P384_SHA384_FIXED_SIGNING, Algorithm::ES384),
                ] {
                    if let Ok(pair) =
                        EcdsaKeyPair::from_private_key_der(curve, sec1.secret_sec1_der())
                    {
                        let pkcs8 = pair
                            .to_pkcs8v1()
                            .map_err(|_| "cannot convert the EC key to PKCS#8".to_owned())?;
                        return Ok(SigningKey::Ec(pkcs8.as_ref().to_vec(), alg));
                    }
                }
                Err("an EC key on a curve other than P-256 or P-384".into())
            }
            PrivateKeyDer::Pkcs8(pkcs8) => {
                let pem = bytes;
                let bytes = pkcs8.secret_pkcs8_der();
                if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes).is_ok() {
                    Ok(SigningKey::Ec(bytes.to_vec(), Algorithm::ES256))
                } else if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, bytes).is_ok()
                {
                    Ok(SigningKey::Ec(bytes.to_vec(), Algorithm::ES384))
                } else if Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes).is_ok() {
                    Ok(SigningKey::Ed25519(bytes.to_vec()))
                } else if RsaKeyPair::from_pkcs8(bytes).is_ok() {
                    Ok(SigningKey::Rsa(pem.to_vec()))
                } else {
                    Err("a PKCS#8 key that is not RSA, EC P-256/P-384 or Ed25519".into())
                }
            }
            _ => Err("an unsupported private key format".into()),
        }
    }

    fn default_algorithm(&self) -> Algorithm {
        match self {
            SigningKey::Hmac(_) => Algorithm::HS256,
            SigningKey::Rsa(_) => Algorithm::RS256,
            SigningKey::Ec(_, alg) => *alg,
            SigningKey::Ed25519(_) => Algorithm::EdDSA,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            SigningKey::Hmac(_) => "an HMAC secret",
            SigningKey::Rsa(_) => "an RSA key",
            SigningKey::Ec(_, Algorithm::ES384) => "an EC P-384 key",
            SigningKey::Ec(..) => "an EC P-256 key",
            SigningKey::Ed25519(_) => "an Ed25519 key",
        }
    }

    fn encoding_key(&self, alg: Algorithm) -> Result<EncodingKey, String> {
        use jsonwebtoken::Algorithm as A;
        let fits = matches!(
            (self, alg),
            (SigningKey::Hmac(_), A::HS256 | A::HS384 | A::HS512)
                | (
                    SigningKey::Rsa(_),
                    A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512
                )
                | (SigningKey::Ed25519(_), A::EdDSA)
        ) || matches!(self, SigningKey::Ec(_, curve) if *curve == alg);
        if !fits {
            return Err(format!("{} cannot sign {alg:?}", self.kind()));
        }
        Ok(match self {
            SigningKey::Hmac(secret) => EncodingKey::from_secret(secret),
            SigningKey::Rsa(pem) => {
                EncodingKey::from_rsa_pem(pem).map_err(|e| format!("RSA key rejected: {e}"))?
            }
            SigningKey::Ec(pkcs8, _) => EncodingKey::from_ec_der(pkcs8),
            SigningKey::Ed25519(pkcs8) => EncodingKey::from_ed_der(pkcs8),
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_with_units_and_bounds() {
        assert_eq!(parse_lifetime("3600").unwrap(), 3600);
        assert_eq!(parse_lifetime("90s").unwrap(), 90);
        assert_eq!(parse_lifetime("15m").unwrap(), 900);
        assert_eq!(parse_lifetime("2h").unwrap(), 7200);
        assert_eq!(parse_lifetime("7d").unwrap(), 7 * 86_400);
        assert!(parse_lifetime("").is_err());
        assert!(parse_lifetime("h").is_err());
        assert!(parse_lifetime("3w").is_err());
        assert!(parse_lifetime("-5").is_err());
        assert!(parse_lifetime("4000d").is_err());
        assert!(parse_lifetime("99999999999999999999d").is_err());
    }

    #[test]
    fn claim_values_are_json_when_they_parse() {
        assert_eq!(parse_claim("n=5").unwrap(), ("n".into(), Value::from(5)));
        assert_eq!(
            parse_claim("t=APPLICATION").unwrap(),
            ("t".into(), Value::from("APPLICATION"))
        );
        assert_eq!(
            parse_claim("s=\"5\"").unwrap(),
            ("s".into(), Value::from("5"))
        );
        assert_eq!(
            parse_claim("a=[\"x\",\"y\"]").unwrap().1,
            serde_json::json!(["x", "y"])
        );
        assert_eq!(parse_claim("eq=a=b").unwrap().1, Value::from("a=b"));
        assert!(parse_claim("novalue").is_err());
        assert!(parse_claim("=x").is_err());
    }

    #[test]
    fn hmac_secret_file_drops_one_final_newline() {
        let SigningKey::Hmac(s) = SigningKey::from_file_bytes(b"secret\n").unwrap() else {
            panic!()
        };
        assert_eq!(s, b"secret");
        assert!(SigningKey::from_file_bytes(b"\n").is_err());
        let k = SigningKey::from_file_bytes(b"s").unwrap();
        assert!(k.encoding_key(Algorithm::RS256).is_err());
    }
}
