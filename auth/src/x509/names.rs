//! Names in a certificate: the subject's common name and RFC 4514 form, SAN entries, and the
//! checks of the validation schemes. Name checks are ours, not a TLS library's: Event Grid
//! accepts SAN entries such as `DNS:sample_client` that are not host names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry as oids;
use x509_parser::prelude::{X509Certificate, X509Name};

use crate::registry::{NameSource, ValidationScheme};

/// Whether two names are equal ignoring case (authentication names are case-insensitive).
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.to_lowercase() == b.to_lowercase()
}

/// The first common name (CN) of the subject, when it is a string.
pub(crate) fn common_name<'a>(cert: &X509Certificate<'a>) -> Option<&'a str> {
    cert.tbs_certificate
        .subject
        .iter_common_name()
        .find_map(|attr| attr.as_str().ok())
}

/// The subject alternative names; an unparseable SAN extension counts as none.
fn san_entries<'c, 'a>(cert: &'c X509Certificate<'a>) -> Vec<&'c GeneralName<'a>> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().collect(),
        _ => Vec::new(),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
}

/// The value one name source yields, if any.
fn from_source(source: NameSource, cert: &X509Certificate<'_>) -> Option<String> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    match source {
        NameSource::ClientCertificateSubject => common_name(cert).and_then(non_empty),
        NameSource::ClientCertificateDns => san_entries(cert).into_iter().find_map(|g| match g {
            GeneralName::DNSName(s) => non_empty(s),
            _ => None,
        }),
        NameSource::ClientCertificateUri => san_entries(cert).into_iter().find_map(|g| match g {
            GeneralName::URI(s) => non_empty(s),
            _ => None,
        }),
        NameSource::ClientCertificateIp => san_entries(cert).into_iter().find_map(|g| match g {
            GeneralName::IPAddress(b) => ip_from_bytes(b).map(|ip| ip.to_string()),
            _ => None,
        }),
        NameSource::ClientCertificateEmail => san_entries(cert).into_iter().find_map(|g| match g {
            GeneralName::RFC822Name(s) => non_empty(s),
            _ => None,
        }),
    }
}

/// The authentication name from the certificate: the first source, in the configured order,
/// that yields a non-empty value.
pub(crate) fn name_from_sources(
    sources: &[NameSource],
    cert: &X509Certificate<'_>,
) -> Option<String> {
    sources.iter().find_map(|s| from_source(*s, cert))
}

/// Whether the certificate satisfies a name-based validation scheme for `name`.
/// `ThumbprintMatch` is not a name check and never matches here.
pub(crate) fn scheme_matches(
    scheme: ValidationScheme,
    cert: &X509Certificate<'_>,
    name: &str,
) -> bool {
    let any_san = |f: &dyn Fn(&GeneralName<'_>) -> bool| san_entries(cert).into_iter().any(f);
    match scheme {
        ValidationScheme::SubjectMatchesAuthenticationName => {
            common_name(cert).is_some_and(|cn| same_name(cn, name))
                || same_name(&rfc4514(cert.subject()), name)
        }
        ValidationScheme::DnsMatchesAuthenticationName => {
            any_san(&|g| matches!(g, GeneralName::DNSName(s) if same_name(s, name)))
        }
        ValidationScheme::UriMatchesAuthenticationName => {
            any_san(&|g| matches!(g, GeneralName::URI(s) if same_name(s, name)))
        }
        ValidationScheme::IpMatchesAuthenticationName => {
            let Ok(wanted) = name.trim().parse::<IpAddr>() else {
                return false;
            };
            any_san(&|g| matches!(g, GeneralName::IPAddress(b) if ip_from_bytes(b) == Some(wanted)))
        }
        ValidationScheme::EmailMatchesAuthenticationName => {
            any_san(&|g| matches!(g, GeneralName::RFC822Name(s) if same_name(s, name)))
        }
        ValidationScheme::ThumbprintMatch => false,
    }
}

/// What a failed name check is called in the reason string.
pub(crate) fn mismatch_reason(scheme: ValidationScheme) -> &'static str {
    match scheme {
        ValidationScheme::SubjectMatchesAuthenticationName => {
            "subject does not match authentication name"
        }
        ValidationScheme::DnsMatchesAuthenticationName => {
            "no SAN DNS name matches authentication name"
        }
        ValidationScheme::UriMatchesAuthenticationName => "no SAN URI matches authentication name",
        ValidationScheme::IpMatchesAuthenticationName => {
            "no SAN IP address matches authentication name"
        }
        ValidationScheme::EmailMatchesAuthenticationName => {
            "no SAN email matches authentication name"
        }
        ValidationScheme::ThumbprintMatch => "thumbprint mismatch",
    }
}

/// RFC 4514 short names of the attribute types it lists.
fn short_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> Option<&'static str> {
    let table = [
        (&oids::OID_X509_COMMON_NAME, "CN"),
        (&oids::OID_X509_LOCALITY_NAME, "L"),
        (&oids::OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
        (&oids::OID_X509_ORGANIZATION_NAME, "O"),
        (&oids::OID_X509_ORGANIZATIONAL_UNIT, "OU"),
        (&oids::OID_X509_COUNTRY_NAME, "C"),
        (&oids::OID_X509_STREET_ADDRESS, "STREET"),
        (&oids::OID_DOMAIN_COMPONENT, "DC"),
        (&oids::OID_USERID, "UID"),
    ];
    table.iter().find(|(o, _)| *o == oid).map(|(_, n)| *n)
}

fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
}

/// The distinguished name in RFC 4514 form: RDNs last-to-first, `,` between them, `+`
/// inside a multi-valued RDN (`CN=device-42,O=Acme IoT` for a subject written
/// `O=Acme IoT, CN=device-42` in certificate order).
pub(crate) fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let type_name = short_name(attr.attr_type())
                .map(str::to_owned)
                .unwrap_or_else(|| attr.attr_type().to_id_string());
            out.push_str(&type_name);
            out.push('=');
            match attr.as_str() {
                Ok(v) => escape_value(v, &mut out),
                // A non-string value: `#` and hex, as RFC 4514 section 2.4 (of the value's
                // content octets; such names do not occur in device certificates).
                Err(_) => {
                    out.push('#');
                    out.push_str(&hex(attr.as_slice()));
                }
            }
        }
    }
    out
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// A SHA-256 thumbprint written in hex, any case, with or without `:` separators (as
/// `openssl x509 -fingerprint -sha256` prints it).
pub(crate) fn parse_thumbprint(text: &str) -> Result<[u8; 32], String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b':' && !b.is_ascii_whitespace())
        .collect();
    if digits.len() != 64 {
        return Err(format!(
            "expected a SHA-256 thumbprint (64 hex digits, `:` allowed), got {} digits",
            digits.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let nibble = |b: u8| char::from(b).to_digit(16);
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err(format!("{text:?} is not hex"));
        };
        // Both nibbles are < 16, so the byte fits.
        out[i] = u8::try_from(hi * 16 + lo).unwrap_or_default();
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_ignore_case_and_colons() {
        let plain = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_thumbprint(&plain).unwrap(), [0xab; 32]);
        assert_eq!(parse_thumbprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_thumbprint("abcd").is_err());
        assert!(parse_thumbprint(&"zz".repeat(32)).is_err());
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
    }

    #[test]
    fn names_compare_without_case() {
        assert!(same_name("Truck-17", "truck-17"));
        assert!(same_name("ÄBC", "äbc"));
        assert!(!same_name("truck-17", "truck-1"));
    }

    #[test]
    fn rfc4514_escapes_specials() {
        let mut s = String::new();
        escape_value(" a,b+c#", &mut s);
        assert_eq!(s, "\\ a\\,b\\+c#");
        let mut s = String::new();
        escape_value("#x ", &mut s);
        assert_eq!(s, "\\#x\\ ");
    }
}
