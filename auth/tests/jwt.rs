//! JWT authentication with static keys (HMAC secrets, issuer certificates and public keys):
//! every algorithm family, every check, identities, the password path, and the token cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod jwt_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, EncodingKey};
use jwt_support::*;
use ringmq_auth::jwt::{self, JwtCache, TokenSource};
use ringmq_auth::{AttrValue, AuthError, ClientType, Method};
use ringmq_codec::ReasonCode;
use serde_json::json;

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

fn hmac_config() -> ringmq_auth::jwt::CustomJwt {
    custom(custom_config(json!({"hmacSecrets": [SECRET]})))
}

#[test]
fn hs256_token_gives_the_identity() {
    let c = hmac_config();
    let mut cache = JwtCache::default();
    let token = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(
            json!({"site": "plant-7", "floor": 3, "groups": ["a", "b"], "admin": true, "obj": {"x": 1}}),
        ),
    );
    // The CONNECT user name plays no part in authentication.
    let id = auth_as(
        &c,
        &token,
        &creds("device-1", Some("somebody-else")),
        &mut cache,
        now(),
    )
    .unwrap();
    assert_eq!(id.method, Method::CustomJwt);
    assert_eq!(&*id.authentication_name, "device-1");
    assert_eq!(id.auth_method.as_deref(), Some("CUSTOM-JWT"));
    assert_eq!(id.principal_id, None);
    assert_eq!(id.client_type, ClientType::Device);
    assert_eq!(id.expires_at, Some(at(600)));
    let a = &id.attributes;
    assert_eq!(a.get("site"), Some(&AttrValue::String("plant-7".into())));
    assert_eq!(a.get("floor"), Some(&AttrValue::Integer(3)));
    assert_eq!(
        a.get("groups"),
        Some(&AttrValue::Array(vec![
            AttrValue::String("a".into()),
            AttrValue::String("b".into())
        ]))
    );
    assert_eq!(
        a.get("clientType"),
        Some(&AttrValue::String("DEVICE".into()))
    );
    assert_eq!(a.get("sub"), Some(&AttrValue::String("device-1".into())));
    assert!(!a.contains_key("admin") && !a.contains_key("obj"));
    assert_eq!(id.pub_rules, None);
    assert!(!id.claim_rules_grant);
}

#[test]
fn every_hmac_size_verifies_and_a_wrong_secret_does_not() {
    let c = hmac_config();
    let mut cache = JwtCache::default();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let ok = hs(alg, SECRET, None, &claims());
        assert!(auth(&c, &ok, &mut cache, now()).is_ok(), "{alg:?}");
        let bad = hs(alg, "another-secret", None, &claims());
        assert!(
            refused(auth(&c, &bad, &mut cache, now())).starts_with("signature"),
            "{alg:?}"
        );
    }
}

#[test]
fn every_public_key_algorithm_verifies_from_a_public_key_and_a_certificate() {
    let algs = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    let rsa = TestKey::generate(Algorithm::RS256);
    for alg in algs {
        let fresh;
        let key = if alg.family() == jsonwebtoken::AlgorithmFamily::Rsa {
            &rsa
        } else {
            fresh = TestKey::generate(alg);
            &fresh
        };
        let token = sign_with(alg, &key.enc, None, &claims());
        let other = TestKey::generate(if alg.family() == jsonwebtoken::AlgorithmFamily::Rsa {
            Algorithm::RS256
        } else {
            alg
        });
        let forged = sign_with(alg, &other.enc, None, &claims());
        // A public key, a certificate, an { encodedCertificate } object, and PEM on one line.
        let one_line = key.cert_pem.replace('\n', " ");
        for form in [
            json!(key.public_pem),
            json!(key.cert_pem),
            json!({"encodedCertificate": key.cert_pem}),
            json!(one_line),
        ] {
            let c = custom(custom_config(json!({"issuerCertificates": [form]})));
            let mut cache = JwtCache::default();
            let id = auth(&c, &token, &mut cache, now());
            assert!(id.is_ok(), "{alg:?}: {id:?}");
            assert!(
                refused(auth(&c, &forged, &mut cache, now())).starts_with("signature"),
                "{alg:?}"
            );
        }
    }
}

#[test]
fn each_claim_check_names_what_failed() {
    let c = custom(custom_config(json!({
        "hmacSecrets": [SECRET],
        "authClaims": {"tenant": "acme", "device": "${clientId}", "owner": "${username}"}
    })));
    let good = claims_with(json!({"tenant": "acme", "device": "device-1", "owner": "alice"}));
    let alice = creds("device-1", Some("alice"));
    let mut cache = JwtCache::with_capacity(0);
    let check =
        |extra: serde_json::Value, creds: &ringmq_auth::Credentials<'_>, when: SystemTime| {
            let mut claims = good.clone();
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            let token = hs(Algorithm::HS256, SECRET, None, &claims);
            auth_as(&c, &token, creds, &mut JwtCache::with_capacity(0), when)
        };
    assert!(check(json!({}), &alice, now()).is_ok());
    let cases = [
        (json!({"iss": "https://evil.test"}), "issuer"),
        (json!({"iss": null}), "issuer"),
        (json!({"aud": "someone-else"}), "audience"),
        (json!({"aud": ["x", "y"]}), "audience"),
        (json!({"aud": null}), "audience"),
        (json!({"exp": NOW_SECS - 61}), "expired"),
        (json!({"exp": null}), "claim exp"),
        (json!({"nbf": NOW_SECS + 61}), "not yet valid"),
        (json!({"tenant": "other"}), "claim tenant"),
        (json!({"tenant": null}), "claim tenant"),
        (json!({"device": "device-2"}), "claim device"),
        (json!({"owner": "bob"}), "claim owner"),
        (json!({"sub": null}), "claim sub"),
    ];
    for (extra, reason) in cases {
        let r = refused(check(extra.clone(), &alice, now()));
        assert!(r.starts_with(reason), "{extra}: {r}");
    }
    // Within the clock skew (60 s by default) both ways.
    assert!(check(json!({"exp": NOW_SECS - 59}), &alice, now()).is_ok());
    assert!(check(json!({"nbf": NOW_SECS + 59}), &alice, now()).is_ok());
    assert!(check(json!({"aud": ["x", AUD]}), &alice, now()).is_ok());
    // `${username}` with no user name in the CONNECT fails; `${clientId}` follows the CONNECT.
    assert!(refused(check(json!({}), &creds("device-1", None), now())).starts_with("claim owner"));
    assert!(
        refused(check(json!({}), &creds("device-2", Some("alice")), now()))
            .starts_with("claim device")
    );
    let _ = &mut cache;
}

#[test]
fn clock_skew_is_configurable() {
    let c = custom(custom_config(
        json!({"hmacSecrets": [SECRET], "clockSkewSeconds": 0}),
    ));
    let token = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"exp": NOW_SECS - 1})),
    );
    assert!(refused(auth(&c, &token, &mut JwtCache::default(), now())).starts_with("expired"));
    assert!(auth(&c, &token, &mut JwtCache::default(), at(-1)).is_ok());
}

#[test]
fn none_and_disallowed_algorithms_are_refused() {
    let c = custom(custom_config(
        json!({"hmacSecrets": [SECRET], "allowedAlgorithms": ["HS512"]}),
    ));
    let mut cache = JwtCache::default();
    let hs256 = hs(Algorithm::HS256, SECRET, None, &claims());
    assert!(refused(auth(&c, &hs256, &mut cache, now())).starts_with("algorithm"));
    assert!(
        auth(
            &c,
            &hs(Algorithm::HS512, SECRET, None, &claims()),
            &mut cache,
            now()
        )
        .is_ok()
    );
    // An unsigned token: {"alg":"none"}.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims().to_string())
    );
    let c = hmac_config();
    assert!(refused(auth(&c, &none, &mut cache, now())).starts_with("algorithm"));
    assert_eq!(cache.stats().signature_verifications, 1);
}

#[test]
fn hmac_with_a_public_key_as_secret_is_refused() {
    // The classic confusion: sign HS256 with the issuer's public key PEM as the secret.
    let rsa = TestKey::generate(Algorithm::RS256);
    let c = custom(custom_config(
        json!({"issuerCertificates": [rsa.public_pem]}),
    ));
    let confused = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
        None,
        &claims(),
    );
    let mut cache = JwtCache::default();
    assert!(refused(auth(&c, &confused, &mut cache, now())).starts_with("unknown key"));
    assert_eq!(
        cache.stats().signature_verifications,
        0,
        "no HMAC check with a public key"
    );
    // And an RS256 token is not tried against an HMAC secret or an EC key.
    let ec = TestKey::generate(Algorithm::ES256);
    let c = custom(custom_config(
        json!({"issuerCertificates": [ec.public_pem], "hmacSecrets": [SECRET]}),
    ));
    let rs = rsa.sign(None, &claims());
    assert!(refused(auth(&c, &rs, &mut cache, now())).starts_with("unknown key"));
    assert_eq!(cache.stats().signature_verifications, 0);
}

#[test]
fn malformed_and_oversized_tokens_are_refused() {
    let c = hmac_config();
    let mut cache = JwtCache::default();
    for t in ["", "abc", "a.b.c", "e30.e30.e30.e30"] {
        assert!(
            refused(auth(&c, t, &mut cache, now())).starts_with("malformed"),
            "{t:?}"
        );
    }
    let huge = "a".repeat(jwt::MAX_TOKEN_BYTES + 1);
    assert!(refused(auth(&c, &huge, &mut cache, now())).starts_with("malformed"));
    let r = jwt::authenticate_with(
        Some(&c),
        None,
        TokenSource::CustomJwt,
        &[0xff, 0xfe, b'.', b'.'],
        &creds("d", None),
        &mut cache,
        now(),
    );
    assert!(refused(r).starts_with("malformed"));
}

#[test]
fn an_unconfigured_method_is_a_bad_method() {
    let c = hmac_config();
    let token = hs(Algorithm::HS256, SECRET, None, &claims());
    let e = jwt::authenticate_with(
        Some(&c),
        None,
        TokenSource::OAuth2Jwt,
        token.as_bytes(),
        &creds("device-1", None),
        &mut JwtCache::default(),
        now(),
    )
    .unwrap_err();
    assert!(matches!(e, AuthError::BadMethod(_)));
    assert_eq!(e.reason_code(), ReasonCode::BAD_AUTHENTICATION_METHOD);
    let e = jwt::authenticate_with(
        None,
        None,
        TokenSource::CustomJwt,
        token.as_bytes(),
        &creds("device-1", None),
        &mut JwtCache::default(),
        now(),
    )
    .unwrap_err();
    assert!(matches!(e, AuthError::BadMethod(_)));
    // A refused token maps to 0x86 (3.1.1: 0x04).
    let e = auth(&c, "x.y.z", &mut JwtCache::default(), now()).unwrap_err();
    assert_eq!(e.reason_code(), ReasonCode::BAD_USER_NAME_OR_PASSWORD);
}

#[test]
fn a_token_in_the_password_only_when_accepted() {
    let token = hs(Algorithm::HS256, SECRET, None, &claims());
    let on = custom(custom_config(
        json!({"hmacSecrets": [SECRET], "acceptTokenInPassword": true}),
    ));
    let off = hmac_config();
    let mut cache = JwtCache::default();
    let run = |c, cache: &mut JwtCache| {
        jwt::authenticate_with(
            Some(c),
            None,
            TokenSource::Password,
            token.as_bytes(),
            &creds("device-1", Some("ignored")),
            cache,
            now(),
        )
    };
    let id = run(&on, &mut cache).unwrap();
    assert_eq!(id.method, Method::PasswordJwt);
    assert_eq!(id.auth_method, None);
    assert_eq!(&*id.authentication_name, "device-1");
    assert!(on.accept_token_in_password && !off.accept_token_in_password);
    assert!(matches!(
        run(&off, &mut cache),
        Err(AuthError::BadCredentials(_))
    ));
    // The same token by CUSTOM-JWT is a different cache entry (different method and identity).
    let id = auth(&on, &token, &mut cache, now()).unwrap();
    assert_eq!(id.method, Method::CustomJwt);
}

#[test]
fn client_type_from_claims_and_default() {
    let c = custom(custom_config(
        json!({"hmacSecrets": [SECRET], "clientTypeClaims": {"role": "app", "tier": 2}}),
    ));
    let mut cache = JwtCache::default();
    let app = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"role": ["x", "app"], "tier": 2})),
    );
    let id = auth(&c, &app, &mut cache, now()).unwrap();
    assert_eq!(id.client_type, ClientType::Application);
    assert_eq!(
        id.attributes.get("clientType"),
        Some(&AttrValue::String("APPLICATION".into()))
    );
    let partly = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"role": "app"})),
    );
    assert_eq!(
        auth(&c, &partly, &mut cache, now()).unwrap().client_type,
        ClientType::Device
    );
    let c = custom(custom_config(
        json!({"hmacSecrets": [SECRET], "defaultClientType": "APPLICATION"}),
    ));
    let plain = hs(Algorithm::HS256, SECRET, None, &claims());
    assert_eq!(
        auth(&c, &plain, &mut cache, now()).unwrap().client_type,
        ClientType::Application
    );
}

#[test]
fn claim_rules_restrict_and_grant() {
    let restrict = custom(custom_config(json!({
        "hmacSecrets": [SECRET], "pubRulesClaim": "pub_rules", "subRulesClaim": "sub_rules"
    })));
    let mut cache = JwtCache::default();
    let with_rules = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"pub_rules": ["telemetry/device-1/.*"], "sub_rules": "cmd/device-1"})),
    );
    let id = auth(&restrict, &with_rules, &mut cache, now()).unwrap();
    assert_eq!(
        id.pub_rules.as_deref(),
        Some(&["telemetry/device-1/.*".to_string()][..])
    );
    assert_eq!(
        id.sub_rules.as_deref(),
        Some(&["cmd/device-1".to_string()][..])
    );
    assert!(!id.claim_rules_grant);
    let without = hs(Algorithm::HS256, SECRET, None, &claims());
    let id = auth(&restrict, &without, &mut cache, now()).unwrap();
    assert_eq!((id.pub_rules, id.sub_rules), (None, None));
    let bad_regex = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"pub_rules": ["a("]})),
    );
    assert!(refused(auth(&restrict, &bad_regex, &mut cache, now())).starts_with("claim pub_rules"));
    let not_list = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"pub_rules": [1]})),
    );
    assert!(refused(auth(&restrict, &not_list, &mut cache, now())).starts_with("claim pub_rules"));

    let grant = custom(custom_config(json!({
        "hmacSecrets": [SECRET], "pubRulesClaim": "pub_rules", "claimRulesMode": "grant",
        "defaultAuthRules": {"pubRules": ["public/.*"], "subRules": ["public/#"]}
    })));
    let id = auth(&grant, &without, &mut cache, now()).unwrap();
    assert!(id.claim_rules_grant);
    assert_eq!(
        id.pub_rules.as_deref(),
        Some(&["public/.*".to_string()][..])
    );
    assert_eq!(id.sub_rules.as_deref(), Some(&["public/#".to_string()][..]));
    let id = auth(&grant, &with_rules, &mut cache, now()).unwrap();
    assert_eq!(
        id.pub_rules.as_deref(),
        Some(&["telemetry/device-1/.*".to_string()][..])
    );
}

#[test]
fn a_cached_token_skips_the_signature_but_not_the_other_checks() {
    let c = custom(custom_config(
        json!({"hmacSecrets": [SECRET], "authClaims": {"device": "${clientId}"}}),
    ));
    let mut cache = JwtCache::default();
    let token = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"device": "device-1"})),
    );
    auth(&c, &token, &mut cache, now()).unwrap();
    assert_eq!(cache.stats().signature_verifications, 1);
    let id = auth(&c, &token, &mut cache, at(10)).unwrap();
    assert_eq!(&*id.authentication_name, "device-1");
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.signature_verifications), (1, 1, 1));
    // A hit still checks `${clientId}` against this CONNECT...
    let other = auth_as(&c, &token, &creds("device-2", None), &mut cache, at(20));
    assert!(refused(other).starts_with("claim device"));
    // ... and the expiry against this `now`; an expired entry is dropped.
    assert!(refused(auth(&c, &token, &mut cache, at(661))).starts_with("expired"));
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.stats().signature_verifications, 1);
    // A re-authentication with a second token verifies it and extends the expiry.
    let later = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"device": "device-1", "exp": NOW_SECS + 1200})),
    );
    let id = auth(&c, &later, &mut cache, at(500)).unwrap();
    assert_eq!(id.expires_at, Some(at(1200)));
    assert_eq!(cache.stats().signature_verifications, 2);
}

#[test]
fn a_reloaded_section_invalidates_cached_tokens() {
    let token = hs(Algorithm::HS256, SECRET, None, &claims());
    let mut cache = JwtCache::default();
    let before = hmac_config();
    auth(&before, &token, &mut cache, now()).unwrap();
    auth(&before, &token, &mut cache, now()).unwrap();
    assert_eq!(cache.stats().signature_verifications, 1);
    // A reload compiles a new section (here: the secret rotated away).
    let after = custom(custom_config(
        json!({"hmacSecrets": ["a-new-secret-also-32-bytes-or-longer"]}),
    ));
    assert!(refused(auth(&after, &token, &mut cache, now())).starts_with("signature"));
    assert_eq!(cache.stats().invalidations, 1);
}

#[test]
fn the_cache_is_bounded() {
    let c = hmac_config();
    let mut cache = JwtCache::with_capacity(2);
    for i in 0..3 {
        let t = hs(
            Algorithm::HS256,
            SECRET,
            None,
            &claims_with(json!({"n": i})),
        );
        auth(&c, &t, &mut cache, now()).unwrap();
    }
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.stats().evictions, 1);
    // Expired entries go first.
    let mut cache = JwtCache::with_capacity(2);
    let short = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"exp": NOW_SECS + 5})),
    );
    auth(&c, &short, &mut cache, now()).unwrap();
    auth(
        &c,
        &hs(Algorithm::HS256, SECRET, None, &claims()),
        &mut cache,
        now(),
    )
    .unwrap();
    let third = hs(
        Algorithm::HS256,
        SECRET,
        None,
        &claims_with(json!({"n": 3})),
    );
    auth(&c, &third, &mut cache, at(100)).unwrap();
    auth(&c, &third, &mut cache, at(100)).unwrap();
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(cache.len(), 2);
}

#[test]
fn oauth2_names_the_client_by_oid() {
    let server = JwksServer::start(String::new());
    let key = TestKey::generate(Algorithm::RS256);
    server.serve(jwks_doc(&[key.jwk("entra-1")]));
    let o = oauth2(json!({
        "tokenIssuers": ["https://login.test/tenant-a/v2.0", "https://login.test/tenant-b/v2.0"],
        "jwks": server.jwks_config()
    }));
    o.jwks().unwrap().refresh_blocking().unwrap();
    let claims = json!({
        "iss": "https://login.test/tenant-b/v2.0", "aud": jwt::DEFAULT_OAUTH2_AUDIENCE,
        "oid": "0000-principal", "sub": "pairwise-sub", "exp": NOW_SECS + 600
    });
    let run = |token: &str, cache: &mut JwtCache| {
        jwt::authenticate_with(
            None,
            Some(&o),
            TokenSource::OAuth2Jwt,
            token.as_bytes(),
            &creds("app-1", None),
            cache,
            now(),
        )
    };
    let mut cache = JwtCache::default();
    let id = run(&key.sign(Some("entra-1"), &claims), &mut cache).unwrap();
    assert_eq!(id.method, Method::OAuth2Jwt);
    assert_eq!(&*id.authentication_name, "0000-principal");
    assert_eq!(id.principal_id.as_deref(), Some("0000-principal"));
    assert_eq!(id.auth_method.as_deref(), Some("OAUTH2-JWT"));
    let mut no_oid = claims.clone();
    no_oid.as_object_mut().unwrap().remove("oid");
    assert!(refused(run(&key.sign(Some("entra-1"), &no_oid), &mut cache)).starts_with("claim oid"));
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("api://other");
    assert!(
        refused(run(&key.sign(Some("entra-1"), &wrong_aud), &mut cache)).starts_with("audience")
    );
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = json!("https://login.test/tenant-c/v2.0");
    assert!(refused(run(&key.sign(Some("entra-1"), &wrong_iss), &mut cache)).starts_with("issuer"));
    let _ = Arc::clone(o.jwks().unwrap());
    let _ = Duration::ZERO;
}

#[test]
fn every_single_character_change_is_refused_and_garbage_never_panics() {
    let c = hmac_config();
    let token = hs(Algorithm::HS256, SECRET, None, &claims());
    let mut cache = JwtCache::with_capacity(0);
    assert!(auth(&c, &token, &mut cache, now()).is_ok());
    let bytes = token.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'.' {
            continue;
        }
        let mut changed = bytes.to_vec();
        changed[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let r = jwt::authenticate_with(
            Some(&c),
            None,
            TokenSource::CustomJwt,
            &changed,
            &creds("device-1", None),
            &mut cache,
            now(),
        );
        assert!(
            matches!(r, Err(AuthError::BadCredentials(_))),
            "position {i}: {r:?}"
        );
    }
    // Deterministic garbage: dots, base64url and stray bytes in random lengths.
    let mut seed: u64 = 0x5eed;
    let alphabet = b"..ABCxyz019-_=+/{}\"\xff\x00eyJ";
    for _ in 0..2000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (seed >> 33) as usize % 120;
        let garbage: Vec<u8> = (0..len)
            .map(|k| {
                let x = seed.rotate_left(k as u32 * 7) >> 40;
                alphabet[x as usize % alphabet.len()]
            })
            .collect();
        let r = jwt::authenticate_with(
            Some(&c),
            None,
            TokenSource::CustomJwt,
            &garbage,
            &creds("device-1", None),
            &mut cache,
            now(),
        );
        assert!(r.is_err());
    }
}
