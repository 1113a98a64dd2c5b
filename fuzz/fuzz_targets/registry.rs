//! Arbitrary text → `Registry::parse` (JSON, lenient PEM certificates and CRLs, JWT issuers,
//! client groups, topic spaces, bindings). The parser must never panic; an error names a
//! problem; a registry that loads keeps its documented limits, finds every client by its
//! authentication name, and gives every client permissions without panicking.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringmq_auth::registry::{
    ATTRIBUTES_MAX, CA_CERTIFICATES_MAX, NAME_CHARS_MAX, Registry, SESSIONS_PER_NAME_MAX,
    THUMBPRINTS_MAX,
};
use ringmq_auth::{ClientType, Identity, Method, Snapshot};

/// Clients whose permissions are computed per input (each one walks the whole policy).
const CLIENTS_CHECKED: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut warnings = Vec::new();
    let reg = match Registry::parse(text, &mut warnings) {
        Ok(reg) => reg,
        Err(e) => {
            assert!(!e.problem.is_empty(), "an error without a problem at {:?}", e.path);
            return;
        }
    };
    assert!(reg.ca_certificates().len() <= CA_CERTIFICATES_MAX);
    assert!((1..=SESSIONS_PER_NAME_MAX).contains(&reg.max_client_sessions_per_authentication_name()));
    for ca in reg.ca_certificates() {
        assert!(!ca.name.is_empty() && ca.name.chars().count() <= NAME_CHARS_MAX);
    }
    for client in reg.clients() {
        assert!(client.name.chars().count() <= NAME_CHARS_MAX);
        assert!(client.authentication_name.chars().count() <= NAME_CHARS_MAX);
        assert!(client.attributes.len() <= ATTRIBUTES_MAX);
        if let Some(cca) = &client.certificate_authentication {
            assert!(cca.allowed_thumbprints.len() <= THUMBPRINTS_MAX);
        }
        let found = reg
            .client_by_authentication_name(&client.authentication_name)
            .expect("a client is found by its authentication name");
        assert!(Arc::ptr_eq(&found.name, &client.name));
    }

    let identities: Vec<Identity> = reg
        .clients()
        .iter()
        .take(CLIENTS_CHECKED)
        .map(|c| Identity {
            method: Method::Certificate,
            authentication_name: c.authentication_name.clone(),
            client_name: Some(c.name.clone()),
            attributes: c.attributes.clone(),
            client_type: ClientType::Device,
            ..Identity::anonymous("")
        })
        .chain(std::iter::once(Identity::anonymous("fuzz")))
        .collect();
    let snapshot = Snapshot {
        version: 1,
        allow_anonymous: false,
        registry: Some(reg),
        files: Default::default(),
    };
    for identity in &identities {
        let perms = snapshot.permissions(identity);
        for filter in perms.publish_filters().chain(perms.subscribe_filters()) {
            // A granted filter is a valid one.
            assert!(
                ringmq_codec::topic::validate_topic_filter(filter).is_ok(),
                "granted filter {:?} is not a valid topic filter",
                String::from_utf8_lossy(filter)
            );
        }
        let _ = perms.allow_publish(b"fleet/truck/truck-17/telemetry/x");
        let _ = perms.allow_subscribe(b"announcements/#");
    }
});
