//! JWT authentication with JWKS keys served by a test endpoint on 127.0.0.1: key selection by
//! `kid`, rotation, the early refetch on an unknown `kid` and its rate limit, failed fetches,
//! request headers, and cache invalidation when the key set changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod jwt_support;

use jsonwebtoken::Algorithm;
use jwt_support::*;
use ringmq_auth::jwt::{self, JwksFetcher, JwtCache};
use serde_json::json;

fn jwks_custom(server: &JwksServer) -> ringmq_auth::jwt::CustomJwt {
    custom(custom_config(json!({"jwks": server.jwks_config()})))
}

#[test]
fn kid_selects_the_jwks_key_for_every_family() {
    let keys = [
        TestKey::generate(Algorithm::RS256),
        TestKey::generate(Algorithm::PS256),
        TestKey::generate(Algorithm::ES256),
        TestKey::generate(Algorithm::ES384),
        TestKey::generate(Algorithm::EdDSA),
        TestKey::generate(Algorithm::ES256),
    ];
    let jwks: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.jwk(&format!("k{i}")))
        .collect();
    let server = JwksServer::start(jwks_doc(&jwks));
    let c = jwks_custom(&server);
    let set = c.jwks().unwrap().refresh_blocking().unwrap();
    assert_eq!(set.len(), 6);
    let mut cache = JwtCache::default();
    for (i, k) in keys.iter().enumerate() {
        let kid = format!("k{i}");
        assert!(
            auth(&c, &k.sign(Some(&kid), &claims()), &mut cache, now()).is_ok(),
            "{:?}",
            k.alg
        );
        // Signed by key i but naming key i+1: another type (refused before any signature
        // check) or, for the two ES256 keys, another key of the same type.
        let wrong = format!("k{}", (i + 1) % keys.len());
        let reason = refused(auth(
            &c,
            &k.sign(Some(&wrong), &claims()),
            &mut cache,
            now(),
        ));
        assert!(
            reason.starts_with("algorithm") || reason.starts_with("signature"),
            "{reason}"
        );
    }
    // ES256 key k5 naming the other ES256 key k2: a signature failure.
    let forged = keys[5].sign(Some("k2"), &claims());
    assert!(refused(auth(&c, &forged, &mut cache, now())).starts_with("signature"));
    // A verified token costs one signature check: the kid picks exactly one key. The k5→k0
    // mismatch (ES256 → RS256) is refused without a check, as are the others but k2→k3
    // (ES256 → ES384: the JWK's alg says ES384).
    assert_eq!(cache.stats().signature_verifications, 6 + 1);
}

#[test]
fn an_algorithm_that_does_not_fit_the_kid_is_refused() {
    let rsa = TestKey::generate(Algorithm::RS256);
    let server = JwksServer::start(jwks_doc(&[rsa.jwk("rsa-1")]));
    let c = jwks_custom(&server);
    c.jwks().unwrap().refresh_blocking().unwrap();
    let mut cache = JwtCache::default();
    // HS256 "signed" with the public key's PEM, naming the RSA kid.
    let confused = hs(Algorithm::HS256, &rsa.public_pem, Some("rsa-1"), &claims());
    assert!(refused(auth(&c, &confused, &mut cache, now())).starts_with("algorithm"));
    // The JWK says alg RS256: a PS256 signature by the same key is refused too.
    let ps = sign_with(Algorithm::PS256, &rsa.enc, Some("rsa-1"), &claims());
    assert!(refused(auth(&c, &ps, &mut cache, now())).starts_with("algorithm"));
    assert_eq!(cache.stats().signature_verifications, 0);
}

#[test]
fn rotation_through_the_jwks() {
    let old = TestKey::generate(Algorithm::ES256);
    let new = TestKey::generate(Algorithm::ES256);
    let server = JwksServer::start(jwks_doc(&[old.jwk("old")]));
    let c = jwks_custom(&server);
    let jwks = c.jwks().unwrap();
    // Before the first fetch there is no key.
    let old_token = old.sign(Some("old"), &claims());
    assert!(
        refused(auth(&c, &old_token, &mut JwtCache::default(), now())).starts_with("unknown key")
    );
    jwks.refresh_blocking().unwrap();
    let mut cache = JwtCache::default();
    auth(&c, &old_token, &mut cache, now()).unwrap();
    auth(&c, &old_token, &mut cache, now()).unwrap();
    assert_eq!(cache.stats().signature_verifications, 1);

    // The issuer publishes the new key next to the old one.
    server.serve(jwks_doc(&[old.jwk("old"), new.jwk("new")]));
    let new_token = new.sign(Some("new"), &claims());
    assert!(refused(auth(&c, &new_token, &mut cache, now())).starts_with("unknown key"));
    jwks.refresh_blocking().unwrap();
    auth(&c, &new_token, &mut cache, now()).unwrap();
    // The new key set invalidated the cached old token: verified again, still good.
    auth(&c, &old_token, &mut cache, now()).unwrap();
    assert!(cache.stats().invalidations >= 1);

    // Then retires the old key: tokens naming it are refused, cached or not.
    server.serve(jwks_doc(&[new.jwk("new")]));
    jwks.refresh_blocking().unwrap();
    assert!(refused(auth(&c, &old_token, &mut cache, now())).starts_with("unknown key"));
    auth(&c, &new_token, &mut cache, now()).unwrap();
}

#[test]
fn a_failed_fetch_keeps_the_last_good_keys() {
    let key = TestKey::generate(Algorithm::RS256);
    let server = JwksServer::start(jwks_doc(&[key.jwk("k")]));
    let c = jwks_custom(&server);
    let jwks = c.jwks().unwrap();
    let good = jwks.refresh_blocking().unwrap();
    server
        .status
        .store(500, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        jwks.refresh_blocking(),
        Err(jwt::JwksError::Status { status: 500, .. })
    ));
    server
        .status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    server.serve("{\"keys\": \"not a list\"}".into());
    assert!(matches!(
        jwks.refresh_blocking(),
        Err(jwt::JwksError::Document { .. })
    ));
    assert_eq!(jwks.keys().generation(), good.generation());
    assert_eq!((jwks.fetches_ok(), jwks.fetches_failed()), (1, 2));
    let token = key.sign(Some("k"), &claims());
    auth(&c, &token, &mut JwtCache::default(), now()).unwrap();
}

#[test]
fn configured_headers_and_basic_credentials_are_sent() {
    let key = TestKey::generate(Algorithm::RS256);
    let server = JwksServer::start(jwks_doc(&[key.jwk("k")]));
    let c = custom(custom_config(json!({"jwks": {
        "url": server.url, "allowInsecureHttp": true,
        "headers": {"X-Api-Key": "k-123"}, "username": "user", "password": "pass"
    }})));
    c.jwks().unwrap().refresh_blocking().unwrap();
    let head = server.last_request.lock().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /keys http/1.1"), "{head}");
    assert!(head.contains("x-api-key: k-123"), "{head}");
    // base64("user:pass")
    assert!(head.contains("authorization: basic dxnlcjpwyxnz"), "{head}");
}

#[test]
fn plain_http_needs_allow_insecure_http() {
    let e = jwt::parse_custom_jwt(
        &custom_config(json!({"jwks": {"url": "http://127.0.0.1:1/keys"}})),
        "p",
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(e.path, "p.jwks.url");
    assert!(e.problem.contains("allowInsecureHttp"));
}

#[test]
fn the_fetcher_refetches_early_on_an_unknown_kid_at_most_every_ten_seconds() {
    let first = TestKey::generate(Algorithm::ES256);
    let second = TestKey::generate(Algorithm::ES256);
    let third = TestKey::generate(Algorithm::ES256);
    let server = JwksServer::start(jwks_doc(&[first.jwk("1")]));
    let c = jwks_custom(&server);
    let jwks = std::sync::Arc::clone(c.jwks().unwrap());
    let fetcher = JwksFetcher::start(jwt::jwks_endpoints_of(Some(&c), None)).unwrap();
    assert_eq!(fetcher.endpoints().len(), 1);
    // The fetcher fetches at start.
    wait_until("the first fetch", || jwks.fetches_ok() == 1);
    let mut cache = JwtCache::default();
    auth(&c, &first.sign(Some("1"), &claims()), &mut cache, now()).unwrap();

    // A token with a kid published after the last fetch: refused now, fetch requested.
    server.serve(jwks_doc(&[first.jwk("1"), second.jwk("2")]));
    let t2 = second.sign(Some("2"), &claims());
    assert!(refused(auth(&c, &t2, &mut cache, now())).starts_with("unknown key"));
    assert_eq!(jwks.early_requests(), 1);
    wait_until("the early refetch", || jwks.fetches_ok() == 2);
    // The next attempt succeeds.
    auth(&c, &t2, &mut cache, at(1)).unwrap();

    // Within ten seconds of that request, unknown kids do not ask again.
    server.serve(jwks_doc(&[first.jwk("1"), second.jwk("2"), third.jwk("3")]));
    let t3 = third.sign(Some("3"), &claims());
    for s in [2, 5, 9] {
        assert!(refused(auth(&c, &t3, &mut cache, at(s))).starts_with("unknown key"));
    }
    assert_eq!(jwks.early_requests(), 1);
    // Ten seconds later one more request is accepted.
    assert!(refused(auth(&c, &t3, &mut cache, at(10))).starts_with("unknown key"));
    assert_eq!(jwks.early_requests(), 2);
    wait_until("the second early refetch", || jwks.fetches_ok() == 3);
    auth(&c, &t3, &mut cache, at(11)).unwrap();
    fetcher.stop();
    // Three fetches in all: at start and two early ones (the refresh interval is an hour).
    assert_eq!(server.hits(), 3);
}

#[test]
fn a_stopped_fetcher_leaves_the_keys_in_place() {
    let key = TestKey::generate(Algorithm::EdDSA);
    let server = JwksServer::start(jwks_doc(&[key.jwk("ed")]));
    let c = jwks_custom(&server);
    let jwks = std::sync::Arc::clone(c.jwks().unwrap());
    let fetcher = JwksFetcher::start(vec![std::sync::Arc::clone(&jwks)]).unwrap();
    wait_until("the first fetch", || jwks.fetches_ok() == 1);
    fetcher.stop();
    // With no fetcher, an unknown kid is still refused without blocking.
    let other = TestKey::generate(Algorithm::EdDSA);
    let mut cache = JwtCache::default();
    assert!(
        refused(auth(
            &c,
            &other.sign(Some("x"), &claims()),
            &mut cache,
            now()
        ))
        .starts_with("unknown key")
    );
    auth(&c, &key.sign(Some("ed"), &claims()), &mut cache, now()).unwrap();
    assert_eq!(server.hits(), 1);
}

#[test]
fn a_token_without_kid_uses_static_keys_next_to_a_jwks() {
    let secret = "another-shared-secret-of-32-bytes-or-more";
    let key = TestKey::generate(Algorithm::RS256);
    let server = JwksServer::start(jwks_doc(&[key.jwk("k")]));
    let c = custom(custom_config(
        json!({"jwks": server.jwks_config(), "hmacSecrets": [secret]}),
    ));
    c.jwks().unwrap().refresh_blocking().unwrap();
    let mut cache = JwtCache::default();
    auth(
        &c,
        &hs(Algorithm::HS256, secret, None, &claims()),
        &mut cache,
        now(),
    )
    .unwrap();
    // Without kid, JWKS keys are not tried.
    assert!(
        refused(auth(&c, &key.sign(None, &claims()), &mut cache, now())).starts_with("unknown key")
    );
}

#[test]
fn an_https_endpoint_that_does_not_speak_tls_is_a_failed_fetch() {
    // Exercises the rustls client set-up (aws-lc-rs provider, webpki roots) without a
    // network: the "server" answers plain HTTP on an https:// URL.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/keys", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let c = custom(custom_config(json!({"jwks": {"url": url}})));
    let jwks = c.jwks().unwrap();
    let e = jwks.refresh_blocking().unwrap_err();
    assert!(matches!(e, jwt::JwksError::Request { .. }), "{e:?}");
    // rustls saw plain HTTP where a TLS record was due.
    assert!(e.to_string().contains("InvalidContentType"), "{e}");
    assert_eq!((jwks.fetches_ok(), jwks.fetches_failed()), (0, 1));
    assert!(jwks.keys().is_empty());
}

#[test]
fn a_fetcher_does_not_refetch_fresh_keys_at_start() {
    let key = TestKey::generate(Algorithm::ES256);
    let server = JwksServer::start(jwks_doc(&[key.jwk("k")]));
    let c = jwks_custom(&server);
    let jwks = std::sync::Arc::clone(c.jwks().unwrap());
    // Fetched before the fetcher starts (e.g. at broker start, before the listeners open).
    jwks.refresh_blocking().unwrap();
    let fetcher = JwksFetcher::start(vec![std::sync::Arc::clone(&jwks)]).unwrap();
    // An early request is still served: it is the only fetch the fetcher makes.
    let other = TestKey::generate(Algorithm::ES256);
    server.serve(jwks_doc(&[key.jwk("k"), other.jwk("o")]));
    let mut cache = JwtCache::default();
    let t = other.sign(Some("o"), &claims());
    assert!(refused(auth(&c, &t, &mut cache, now())).starts_with("unknown key"));
    wait_until("the early refetch", || jwks.fetches_ok() == 2);
    fetcher.stop();
    assert_eq!(server.hits(), 2);
    auth(&c, &t, &mut cache, now()).unwrap();
}
