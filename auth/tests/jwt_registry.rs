//! JWT authentication through the registry file and `Snapshot::authenticate`: the CONNECT's
//! Authentication Method picks the verifier, a password token needs `acceptTokenInPassword`,
//! a reload carries JWKS keys over, and the fetcher starts from a registry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod jwt_support;

use jsonwebtoken::Algorithm;
use jwt_support::*;
use ringmq_auth::jwt::{self, JwksFetcher};
use ringmq_auth::registry::Registry;
use ringmq_auth::{AuthError, Caches, Method, Snapshot};
use ringmq_codec::ReasonCode;
use serde_json::json;

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

fn snapshot(client_authentication: serde_json::Value) -> Snapshot {
    let text = json!({"namespace": {"clientAuthentication": client_authentication}}).to_string();
    let mut warnings = Vec::new();
    let registry = Registry::parse(&text, &mut warnings).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    Snapshot {
        version: 1,
        allow_anonymous: false,
        registry: Some(registry),
        files: Default::default(),
    }
}

#[test]
fn connect_with_custom_jwt_or_a_password_token() {
    let s = snapshot(json!({"customJwtAuthentication": custom_config(json!({
        "hmacSecrets": [SECRET], "acceptTokenInPassword": true
    }))}));
    let token = hs(Algorithm::HS256, SECRET, None, &claims());
    let mut caches = Caches::default();

    // MQTT 5: Authentication Method CUSTOM-JWT, the token in Authentication Data.
    let mut c = creds("device-1", None);
    c.auth_method = Some("CUSTOM-JWT");
    c.auth_data = Some(token.as_bytes());
    let id = s.authenticate(&c, &mut caches, now()).unwrap();
    assert_eq!(id.method, Method::CustomJwt);
    assert_eq!(id.auth_method.as_deref(), Some("CUSTOM-JWT"));

    // MQTT 3.1.1 (or 5 without a method): the token as the password; the user name is ignored.
    let mut c = creds("device-1", Some("anything"));
    c.v5 = false;
    c.password = Some(token.as_bytes());
    let id = s.authenticate(&c, &mut caches, now()).unwrap();
    assert_eq!(id.method, Method::PasswordJwt);
    assert_eq!(&*id.authentication_name, "device-1");

    // A bad token in the password: 0x86, which 3.1.1 sends as return code 4.
    c.password = Some(b"not-a-token");
    let e = s.authenticate(&c, &mut caches, now()).unwrap_err();
    assert_eq!(e.reason_code(), ReasonCode::BAD_USER_NAME_OR_PASSWORD);

    // OAUTH2-JWT is not configured here: bad authentication method.
    let mut c = creds("device-1", None);
    c.auth_method = Some("OAUTH2-JWT");
    c.auth_data = Some(token.as_bytes());
    let e = s.authenticate(&c, &mut caches, now()).unwrap_err();
    assert!(matches!(e, AuthError::BadMethod(_)), "{e:?}");
}

#[test]
fn a_password_token_is_not_tried_unless_accepted() {
    let s = snapshot(
        json!({"customJwtAuthentication": custom_config(json!({"hmacSecrets": [SECRET]}))}),
    );
    let token = hs(Algorithm::HS256, SECRET, None, &claims());
    let mut c = creds("device-1", None);
    c.password = Some(token.as_bytes());
    let e = s
        .authenticate(&c, &mut Caches::default(), now())
        .unwrap_err();
    assert!(matches!(e, AuthError::BadCredentials(_)));
}

#[test]
fn a_bad_section_is_a_registry_error_with_its_path() {
    let text = json!({"namespace": {"clientAuthentication": {"customJwtAuthentication": {
        "tokenIssuer": ISS, "hmacSecrets": [SECRET], "claimRulesMode": "sometimes"
    }}}})
    .to_string();
    let e = Registry::parse(&text, &mut Vec::new()).unwrap_err();
    assert_eq!(
        e.path,
        "namespace.clientAuthentication.customJwtAuthentication.claimRulesMode"
    );
}

#[test]
fn reload_carries_jwks_keys_over_and_the_fetcher_starts_from_a_registry() {
    let key = TestKey::generate(Algorithm::ES256);
    let server = JwksServer::start(jwks_doc(&[key.jwk("k")]));
    let section = json!({
        "customJwtAuthentication": custom_config(json!({"jwks": server.jwks_config()})),
        "oauth2JwtAuthentication": {"tokenIssuers": [ISS], "jwks": server.jwks_config()}
    });
    let old = snapshot(section.clone());
    let old_reg = old.registry.as_ref().unwrap();
    assert_eq!(jwt::jwks_endpoints(old_reg).len(), 2);
    let fetcher = JwksFetcher::for_registry(old_reg).unwrap();
    let endpoints = jwt::jwks_endpoints(old_reg);
    wait_until("both endpoints fetched", || {
        endpoints.iter().all(|e| e.fetches_ok() == 1)
    });
    fetcher.stop();

    // The reload compiles new sections with empty key sets; carrying over fills them.
    let new = snapshot(section);
    let new_reg = new.registry.as_ref().unwrap();
    assert!(
        new_reg
            .custom_jwt
            .as_ref()
            .unwrap()
            .jwks()
            .unwrap()
            .keys()
            .is_empty()
    );
    assert_eq!(jwt::carry_over_keys(old_reg, new_reg), 2);
    let mut c = creds("device-1", None);
    let token = key.sign(Some("k"), &claims());
    c.auth_method = Some("CUSTOM-JWT");
    c.auth_data = Some(token.as_bytes());
    let id = new.authenticate(&c, &mut Caches::default(), now()).unwrap();
    assert_eq!(&*id.authentication_name, "device-1");
    assert_eq!(server.hits(), 2);
}
