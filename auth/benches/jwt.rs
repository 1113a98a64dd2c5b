//! JWT verification cost per CONNECT: cold (decode + signature + claims, no cache) and cached
//! (SHA-256 of the token + cache lookup + time and claim checks), for HS256, RS256 and ES256.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ringmq_auth::Credentials;
use ringmq_auth::jwt::{self, CustomJwt, JwtCache, TokenSource};
use serde_json::json;

const NOW_SECS: u64 = 1_800_000_000;
const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

fn setup(alg: Algorithm) -> (CustomJwt, String) {
    let (keys, enc) = match alg {
        Algorithm::HS256 => (
            json!({"hmacSecrets": [SECRET]}),
            EncodingKey::from_secret(SECRET.as_bytes()),
        ),
        Algorithm::RS256 => {
            let kp =
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                    .unwrap();
            (
                json!({"issuerCertificates": [kp.public_key_pem()]}),
                EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
            )
        }
        Algorithm::ES256 => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            (
                json!({"issuerCertificates": [kp.public_key_pem()]}),
                EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
            )
        }
        other => panic!("{other:?}"),
    };
    let mut config = json!({
        "tokenIssuer": "https://issuer.test", "audience": "ringmq",
        "authClaims": {"device": "${clientId}"}
    });
    for (k, v) in keys.as_object().unwrap() {
        config[k] = v.clone();
    }
    let c = jwt::parse_custom_jwt(&config, "bench", &mut Vec::new()).unwrap();
    let claims = json!({
        "iss": "https://issuer.test", "aud": "ringmq", "sub": "device-1", "device": "device-1",
        "exp": NOW_SECS + 3600, "site": "plant-7", "groups": ["a", "b"]
    });
    let token = jsonwebtoken::encode(&Header::new(alg), &claims, &enc).unwrap();
    (c, token)
}

fn bench(c: &mut Criterion) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    let creds = Credentials {
        client_id: "device-1",
        username: None,
        password: None,
        auth_method: Some("CUSTOM-JWT"),
        auth_data: None,
        peer_certificates: &[],
        v5: true,
    };
    let mut group = c.benchmark_group("jwt_verify");
    for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
        let (config, token) = setup(alg);
        let run = |cache: &mut JwtCache| {
            jwt::authenticate_with(
                Some(&config),
                None,
                TokenSource::CustomJwt,
                black_box(token.as_bytes()),
                &creds,
                cache,
                now,
            )
            .unwrap()
        };
        let mut cold = JwtCache::with_capacity(0);
        group.bench_function(format!("{alg:?}/cold"), |b| b.iter(|| run(&mut cold)));
        let mut warm = JwtCache::default();
        run(&mut warm);
        group.bench_function(format!("{alg:?}/cached"), |b| b.iter(|| run(&mut warm)));
        assert_eq!(warm.stats().signature_verifications, 1);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
