//! The registry file: a complete example, lenient PEM, warnings for keys ringmq ignores,
//! and errors that name the JSON path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "x509_support/mod.rs"]
mod support;

use std::time::Duration;

use ringmq_auth::AttrValue;
use ringmq_auth::registry::{ClientState, LoadError, NameSource, Registry, ValidationScheme};
use serde_json::{Value, json};
use support::*;

fn parse(v: &Value) -> (Registry, Vec<String>) {
    let mut warnings = Vec::new();
    let reg = Registry::parse(&v.to_string(), &mut warnings).unwrap_or_else(|e| panic!("{e}"));
    (reg, warnings)
}

fn error(v: &Value) -> (String, String) {
    let e = Registry::parse(&v.to_string(), &mut Vec::new()).unwrap_err();
    (e.path, e.problem)
}

fn one_line(pem: &str) -> String {
    pem.lines().collect::<String>()
}

#[test]
fn complete_example() {
    let root = root("Fleet Root");
    let inter = intermediate("Fleet Intermediate", &root);
    let doc = json!({
        "namespace": {
            "clientAuthentication": {
                "alternativeAuthenticationNameSources": ["ClientCertificateSubject", "ClientCertificateDns"]
            },
            "maxClientSessionsPerAuthenticationName": 2
        },
        "caCertificates": [
            { "name": "fleet-root", "encodedCertificate": root.pem() },
            { "name": "fleet-intermediate", "encodedCertificate": one_line(&inter.pem()), "crls": [crl(&inter, &[7])] }
        ],
        "clients": [
            {
                "name": "truck-17", "authenticationName": "Truck-17", "state": "Enabled",
                "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName", "allowedThumbprints": [] },
                "attributes": { "type": "truck", "year": 2024, "zones": ["eu", "us"], "active": true }
            },
            { "name": "sensor-9", "state": "Disabled",
              "clientCertificateAuthentication": { "validationScheme": "ThumbprintMatch", "allowedThumbprints": ["AB".repeat(32)] } },
            { "name": "app-1" }
        ],
        "clientGroups": [], "topicSpaces": [], "permissionBindings": [], "roleAssignments": []
    });
    let (reg, warnings) = parse(&doc);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        reg.name_sources(),
        &[
            NameSource::ClientCertificateSubject,
            NameSource::ClientCertificateDns
        ]
    );
    assert_eq!(reg.max_client_sessions_per_authentication_name(), 2);
    assert_eq!(reg.ca_certificates().len(), 2);
    assert_eq!(reg.ca_certificates()[0].subject, "CN=Fleet Root,O=Acme IoT");
    assert_eq!(reg.ca_certificates()[1].crl_count, 1);
    assert_eq!(reg.clients().len(), 3);

    let truck = reg.client_by_authentication_name("TRUCK-17").unwrap();
    assert_eq!(&*truck.authentication_name, "Truck-17");
    assert_eq!(&*truck.name, "truck-17");
    assert_eq!(truck.state, ClientState::Enabled);
    let cca = truck.certificate_authentication.as_ref().unwrap();
    assert_eq!(
        cca.validation_scheme,
        ValidationScheme::SubjectMatchesAuthenticationName
    );
    assert_eq!(
        truck.attributes.get("type"),
        Some(&AttrValue::String("truck".into()))
    );
    assert_eq!(truck.attributes.get("active"), Some(&AttrValue::Bool(true)));

    // authenticationName defaults to the name.
    let sensor = reg.client_by_authentication_name("sensor-9").unwrap();
    assert_eq!(sensor.state, ClientState::Disabled);
    assert_eq!(
        sensor
            .certificate_authentication
            .as_ref()
            .unwrap()
            .allowed_thumbprints,
        vec![[0xab; 32]]
    );
    let app = reg.client_by_authentication_name("app-1").unwrap();
    assert!(app.certificate_authentication.is_none());
    assert!(app.attributes.is_empty());
    assert!(reg.client_by_authentication_name("truck-1").is_none());
}

#[test]
fn defaults() {
    let (mut reg, warnings) = parse(&json!({}));
    assert!(warnings.is_empty());
    assert!(reg.name_sources().is_empty());
    assert_eq!(reg.max_client_sessions_per_authentication_name(), 1);
    assert_eq!(reg.clock_skew(), Duration::from_secs(60));
    reg.set_clock_skew(Duration::from_secs(5));
    assert_eq!(reg.clock_skew(), Duration::from_secs(5));
    assert!(!reg.accepts_token_in_password());
}

#[test]
fn encoded_certificate_in_any_layout() {
    let root = root("Fleet Root");
    let pem = root.pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for text in [pem.clone(), one_line(&pem), pem.replace('\n', "\r\n"), body] {
        let (reg, _) =
            parse(&json!({ "caCertificates": [{ "name": "r", "encodedCertificate": text }] }));
        assert_eq!(
            reg.ca_certificates()[0].certificate.as_ref(),
            root.der().as_ref()
        );
    }
}

#[test]
fn unknown_keys_are_warned_with_their_paths() {
    let doc = json!({
        "$schema": "x",
        "namespace": { "description": "d", "clientAuthentication": { "foo": 1 } },
        "caCertificates": [{ "name": "r", "encodedCertificate": root("R").pem(), "id": "/subscriptions/…" }],
        "clients": [{ "name": "c", "description": "truck",
                      "clientCertificateAuthentication": { "validationScheme": "ThumbprintMatch",
                                                           "allowedThumbprints": ["00".repeat(32)], "bar": true } }]
    });
    let (_, warnings) = parse(&doc);
    for path in [
        "$schema",
        "namespace.description",
        "namespace.clientAuthentication.foo",
        "caCertificates[0].id",
        "clients[0].description",
        "clients[0].clientCertificateAuthentication.bar",
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("{path}: ignored"))),
            "{path}: {warnings:?}"
        );
    }
    assert_eq!(warnings.len(), 6, "{warnings:?}");
}

#[test]
fn arm_properties_wrappers_are_read() {
    let doc = json!({
        "clients": [{
            "name": "truck-17",
            "type": "Microsoft.EventGrid/namespaces/clients",
            "properties": {
                "authenticationName": "truck-17-auth",
                "state": "Disabled",
                "clientCertificateAuthentication": { "validationScheme": "DnsMatchesAuthenticationName" },
                "attributes": { "type": "truck" },
                "description": "x"
            }
        }]
    });
    let (reg, warnings) = parse(&doc);
    let c = reg.client_by_authentication_name("truck-17-auth").unwrap();
    assert_eq!(c.state, ClientState::Disabled);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("clients[0].properties.description"))
    );
    assert!(warnings.iter().any(|w| w.starts_with("clients[0].type")));
}

fn with_client(client: Value) -> Value {
    json!({ "clients": [ { "name": "ok" }, client ] })
}

#[test]
fn wrong_values_name_their_path() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with_client(json!({ "name": "c", "state": "On" })),
            "clients[1].state",
            "expected \"Enabled\" or \"Disabled\", got \"On\"",
        ),
        (
            with_client(
                json!({ "name": "c", "clientCertificateAuthentication": { "validationScheme": "subjectMatchesAuthenticationName" } }),
            ),
            "clients[1].clientCertificateAuthentication.validationScheme",
            "expected one of",
        ),
        (
            with_client(json!({ "name": "c", "clientCertificateAuthentication": {} })),
            "clients[1].clientCertificateAuthentication.validationScheme",
            "missing",
        ),
        (
            with_client(
                json!({ "name": "c", "clientCertificateAuthentication": { "validationScheme": "ThumbprintMatch",
            "allowedThumbprints": ["00".repeat(32), "11".repeat(32), "22".repeat(32)] } }),
            ),
            "clients[1].clientCertificateAuthentication.allowedThumbprints",
            "at most 2",
        ),
        (
            with_client(
                json!({ "name": "c", "clientCertificateAuthentication": { "validationScheme": "ThumbprintMatch",
            "allowedThumbprints": ["xyz"] } }),
            ),
            "clients[1].clientCertificateAuthentication.allowedThumbprints[0]",
            "SHA-256 thumbprint",
        ),
        (
            with_client(
                json!({ "name": "c", "clientCertificateAuthentication": { "validationScheme": "ThumbprintMatch" } }),
            ),
            "clients[1].clientCertificateAuthentication.allowedThumbprints",
            "at least one",
        ),
        (
            with_client(json!({ "name": "OK" })),
            "clients[1].name",
            "duplicate client name",
        ),
        (
            with_client(json!({ "name": "c", "authenticationName": "Ok" })),
            "clients[1].authenticationName",
            "already used by clients[0]",
        ),
        (
            with_client(json!({ "name": "c", "attributes": { "weight": 1.5 } })),
            "clients[1].attributes.weight",
            "expected an integer",
        ),
        (
            with_client(json!({ "name": "c", "attributes": { "nested": [[1]] } })),
            "clients[1].attributes.nested[0]",
            "nested arrays",
        ),
        (
            with_client(json!({ "name": "c", "attributes": { "none": null } })),
            "clients[1].attributes.none",
            "expected a string, integer",
        ),
        (
            with_client(json!({ "name": "" })),
            "clients[1].name",
            "must not be empty",
        ),
        (
            with_client(json!({ "state": "Enabled" })),
            "clients[1].name",
            "missing",
        ),
        (
            with_client(json!("truck")),
            "clients[1]",
            "expected an object",
        ),
        (json!({ "clients": {} }), "clients", "expected an array"),
        (
            json!({ "namespace": { "maxClientSessionsPerAuthenticationName": 0 } }),
            "namespace.maxClientSessionsPerAuthenticationName",
            "from 1 to 100",
        ),
        (
            json!({ "namespace": { "clientAuthentication": { "alternativeAuthenticationNameSources": ["ClientCertificateCN"] } } }),
            "namespace.clientAuthentication.alternativeAuthenticationNameSources[0]",
            "expected one of",
        ),
        (
            json!({ "caCertificates": [{ "name": "r", "encodedCertificate": "-----BEGIN CERTIFICATE-----AAAA-----END CERTIFICATE-----" }] }),
            "caCertificates[0].encodedCertificate",
            "unparseable certificate",
        ),
        (
            json!({ "caCertificates": [{ "name": "r" }] }),
            "caCertificates[0].encodedCertificate",
            "missing",
        ),
        (json!([]), "", "expected an object"),
    ];
    for (doc, path, problem) in cases {
        let (p, m) = error(&doc);
        assert_eq!(p, path, "{doc}: {m}");
        assert!(m.contains(problem), "{path}: {m:?} lacks {problem:?}");
    }
    let e = Registry::parse("{\"clients\": [", &mut Vec::new()).unwrap_err();
    assert!(e.problem.starts_with("invalid JSON"), "{e}");
    let e = error(&with_client(json!({ "name": "c", "state": "On" })));
    assert_eq!(
        format!("{}", ringmq_auth::RegistryError::new(e.0, e.1)),
        "`clients[1].state`: expected \"Enabled\" or \"Disabled\", got \"On\""
    );
}

#[test]
fn ca_certificates_and_crls_are_checked() {
    let root = root("Fleet Root");
    let other = root_with(ca_params("Other Root"));
    let leaf_params = leaf_params("not-a-ca");
    let not_ca = {
        let key = rcgen::KeyPair::generate().unwrap();
        leaf_params.self_signed(&key).unwrap().pem()
    };
    let (p, m) =
        error(&json!({ "caCertificates": [{ "name": "r", "encodedCertificate": not_ca }] }));
    assert_eq!(p, "caCertificates[0].encodedCertificate");
    assert!(m.contains("not a CA certificate"), "{m}");

    let (p, m) = error(
        &json!({ "caCertificates": [{ "name": "r", "encodedCertificate": root.pem(), "crls": [crl(&other, &[1])] }] }),
    );
    assert_eq!(p, "caCertificates[0].crls[0]");
    assert!(m.contains("is not this CA certificate"), "{m}");

    // Same subject, other key: the CRL's signature does not verify.
    let twin = root_with(ca_params("Fleet Root"));
    let (p, m) = error(
        &json!({ "caCertificates": [{ "name": "r", "encodedCertificate": root.pem(), "crls": [crl(&twin, &[1])] }] }),
    );
    assert_eq!(p, "caCertificates[0].crls[0]");
    assert!(m.contains("signature does not verify"), "{m}");

    let (p, m) = error(
        &json!({ "caCertificates": [{ "name": "r", "encodedCertificate": root.pem(), "crls": ["garbage"] }] }),
    );
    assert_eq!(p, "caCertificates[0].crls[0]");
    assert!(
        m.contains("unparseable CRL") || m.contains("invalid PEM"),
        "{m}"
    );

    let (p, m) = error(&json!({ "caCertificates": [
        { "name": "r", "encodedCertificate": root.pem() }, { "name": "R", "encodedCertificate": other.pem() } ] }));
    assert_eq!(p, "caCertificates[1].name");
    assert!(m.contains("duplicate"), "{m}");

    // An expired CA certificate loads with a warning (connects through it are refused).
    let mut p = ca_params("Old Root");
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let old = root_with(p);
    let (_, warnings) =
        parse(&json!({ "caCertificates": [{ "name": "old", "encodedCertificate": old.pem() }] }));
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("caCertificates[0].encodedCertificate: CA certificate expired")),
        "{warnings:?}"
    );
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("ringmq-registry-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.json");
    std::fs::write(
        &good,
        json!({ "clients": [{ "name": "c", "x": 1 }] }).to_string(),
    )
    .unwrap();
    let (reg, warnings) = Registry::load(&good).unwrap();
    assert_eq!(reg.clients().len(), 1);
    assert_eq!(
        warnings,
        vec!["clients[0].x: ignored (not used by ringmq)".to_owned()]
    );

    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        json!({ "clients": [{ "name": "c", "state": "On" }] }).to_string(),
    )
    .unwrap();
    let e = Registry::load(&bad).unwrap_err();
    assert!(matches!(e, LoadError::Invalid { .. }));
    let text = e.to_string();
    assert!(
        text.contains("bad.json") && text.contains("clients[0].state") && text.contains("\"On\""),
        "{text}"
    );

    let e = Registry::load(&dir.join("missing.json")).unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }));
    assert!(e.to_string().contains("missing.json"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn arm_topic_spaces_configuration_is_read() {
    let doc = json!({
        "namespace": {
            "name": "fleet-ns",
            "properties": {
                "topicSpacesConfiguration": {
                    "state": "Enabled",
                    "maximumClientSessionsPerAuthenticationName": 3,
                    "clientAuthentication": { "alternativeAuthenticationNameSources": ["ClientCertificateUri"] }
                }
            }
        }
    });
    let (reg, warnings) = parse(&doc);
    assert_eq!(reg.max_client_sessions_per_authentication_name(), 3);
    assert_eq!(reg.name_sources(), &[NameSource::ClientCertificateUri]);
    assert_eq!(
        warnings,
        vec![
            "namespace.properties.topicSpacesConfiguration.state: ignored (not used by ringmq)"
                .to_owned(),
            "namespace.name: ignored (not used by ringmq)".to_owned(),
        ]
    );

    let twice = json!({
        "namespace": {
            "maxClientSessionsPerAuthenticationName": 2,
            "topicSpacesConfiguration": { "maximumClientSessionsPerAuthenticationName": 3 }
        }
    });
    let (path, problem) = error(&twice);
    assert_eq!(path, "namespace.topicSpacesConfiguration");
    assert!(problem.contains("give them once"), "{problem}");
}
