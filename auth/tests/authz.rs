//! Authorization scenarios: a registry's client groups, topic spaces, permission bindings and
//! role assignments, and the publish and subscribe decisions they give each client, with and
//! without JWT claim rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use ringmq_auth::authz::{Permissions, Policy, parse_policy};
use ringmq_auth::{AttrValue, Identity, RegistryError};
use serde_json::{Value, json};

fn registry() -> Value {
    json!({
        "clientGroups": [
            { "name": "trucks", "query": "attributes.type = 'truck' AND attributes.year >= 2022" },
            { "name": "old", "query": "attributes.year < 2022" },
            { "name": "eu", "query": "attributes.zones = 'eu'" },
            { "name": "named", "query": "authenticationName IN ['truck-17', 'car-1']" },
            { "name": "electric", "query": "attributes.ev = TRUE" },
            { "name": "vintage", "query": "attributes.type != 'truck' and (attributes.year <= 2012 OR attributes.year > 2100) AND NOT attributes.zone <> 'eu'" },
            { "name": "unbound", "query": "attributes.type = 'truck'" },
            { "name": "us-or-asia", "query": "attributes.zone = 'us' OR attributes.zone = 'asia'", "description": "x" }
        ],
        "topicSpaces": [
            { "name": "telemetry", "topicTemplates": ["fleet/${client.attributes.zone}/${client.authenticationName}/telemetry/#"] },
            { "name": "status", "topicTemplates": ["status/dev-${client.authenticationName}"] },
            { "name": "broadcast", "topicTemplates": ["broadcast/+/alerts", "broadcast/all"] },
            { "name": "commands", "topicTemplates": ["cmd/${client.authenticationName}/+"] },
            { "name": "by-tag", "topicTemplates": ["tags/${client.attributes.zones}"] },
            { "name": "ev", "topicTemplates": ["ev/#"] },
            { "name": "public", "topicTemplates": ["public/${client.attributes.zone}/#", "public/all"] },
            { "name": "regional", "topicTemplates": ["region/${client.attributes.zone}/+/${client.attributes.year}"] }
        ],
        "permissionBindings": [
            { "name": "trucks-pub", "clientGroupName": "trucks", "topicSpaceName": "telemetry", "permission": "Publisher" },
            { "name": "trucks-cmd", "clientGroupName": "trucks", "topicSpaceName": "commands", "permission": "Subscriber" },
            { "name": "eu-alerts", "clientGroupName": "eu", "topicSpaceName": "broadcast", "permission": "Subscriber" },
            { "name": "named-status", "clientGroupName": "named", "topicSpaceName": "status", "permission": "Publisher" },
            { "name": "all-public", "clientGroupName": "$all", "topicSpaceName": "public", "permission": "Subscriber" },
            { "name": "ev-pub", "clientGroupName": "electric", "topicSpaceName": "ev", "permission": "Publisher" },
            { "name": "old-tags", "clientGroupName": "old", "topicSpaceName": "by-tag", "permission": "Publisher" },
            { "name": "vintage-ev", "clientGroupName": "vintage", "topicSpaceName": "ev", "permission": "Subscriber" },
            { "name": "us-regional", "clientGroupName": "us-or-asia", "topicSpaceName": "regional", "permission": "Publisher" }
        ],
        "roleAssignments": [
            { "principalId": "oid-app", "roleDefinitionName": "EventGrid TopicSpaces Subscriber", "scope": "/" },
            { "principalId": "oid-app", "roleDefinitionName": "EventGrid TopicSpaces Publisher", "scope": "/topicSpaces/status" },
            { "principalId": "oid-ops", "roleDefinitionName": "EventGrid TopicSpaces Publisher",
              "scope": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/namespaces/ns" },
            { "principalId": "oid-ro", "roleDefinitionName": "eventgrid topicspaces subscriber",
              "scope": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/namespaces/ns/topicSpaces/broadcast" }
        ]
    })
}

fn policy() -> Policy {
    let mut warnings = Vec::new();
    match parse_policy(&registry(), &mut warnings) {
        Ok(p) => {
            assert_eq!(warnings, Vec::<String>::new());
            p
        }
        Err(e) => panic!("registry: {e}"),
    }
}

fn s(v: &str) -> AttrValue {
    AttrValue::String(v.into())
}

fn client(name: &str, attrs: &[(&str, AttrValue)]) -> Identity {
    let mut id = Identity::anonymous(name);
    for (k, v) in attrs {
        id.attributes.insert((*k).into(), v.clone());
    }
    id
}

/// type truck, 2023, zone eu, zones [eu, us], electric.
fn truck_17() -> Identity {
    client(
        "truck-17",
        &[
            ("type", s("truck")),
            ("year", AttrValue::Integer(2023)),
            ("zone", s("eu")),
            ("zones", AttrValue::Array(vec![s("eu"), s("us")])),
            ("ev", AttrValue::Bool(true)),
        ],
    )
}

/// type truck, 2021 (not in `trucks`), zone us, zones [us].
fn truck_99() -> Identity {
    client(
        "truck-99",
        &[
            ("type", s("truck")),
            ("year", AttrValue::Integer(2021)),
            ("zone", s("us")),
            ("zones", AttrValue::Array(vec![s("us")])),
        ],
    )
}

/// type car, 2010, zone eu, a scalar `zones`.
fn car_1() -> Identity {
    client(
        "car-1",
        &[
            ("type", s("car")),
            ("year", AttrValue::Integer(2010)),
            ("zone", s("eu")),
            ("zones", s("eu")),
            ("ev", AttrValue::Bool(false)),
        ],
    )
}

fn principal(oid: &str) -> Identity {
    let mut id = Identity::anonymous("app-1");
    id.principal_id = Some(Arc::from(oid));
    id
}

#[derive(Clone, Copy)]
enum Act {
    Pub,
    Sub,
}

fn check(perms: &Permissions, who: &str, cases: &[(Act, &str, bool)]) {
    for &(act, topic, want) in cases {
        // Twice: the second publish check comes from the cache.
        for round in 0..2 {
            let got = match act {
                Act::Pub => perms.allow_publish(topic.as_bytes()),
                Act::Sub => perms.allow_subscribe(topic.as_bytes()),
            };
            let what = match act {
                Act::Pub => "publish",
                Act::Sub => "subscribe",
            };
            assert_eq!(got, want, "{who} {what} {topic:?} (round {round})");
        }
    }
}

use Act::{Pub, Sub};

#[test]
fn truck_in_trucks_eu_named_electric() {
    let p = policy().permissions(&truck_17());
    check(
        &p,
        "truck-17",
        &[
            // telemetry: variables as whole levels, `#` at the end.
            (Pub, "fleet/eu/truck-17/telemetry", true),
            (Pub, "fleet/eu/truck-17/telemetry/engine/rpm", true),
            (Pub, "fleet/eu/truck-18/telemetry/engine", false),
            (Pub, "fleet/us/truck-17/telemetry", false),
            (Pub, "fleet/eu/truck-17/status", false),
            // status: variable as part of a level (via `named`).
            (Pub, "status/dev-truck-17", true),
            (Pub, "status/truck-17", false),
            (Pub, "status/dev-truck-17/x", false),
            // ev: `electric` (a boolean attribute).
            (Pub, "ev/charge/level", true),
            // Subscriber spaces are not publishable.
            (Pub, "cmd/truck-17/reboot", false),
            (Pub, "broadcast/x/alerts", false),
            (Pub, "public/eu/news", false),
            // by-tag is bound to `old` only; regional to us-or-asia only.
            (Pub, "tags/eu", false),
            (Pub, "region/eu/x/2023", false),
            // commands (`trucks`), `+` in the template.
            (Sub, "cmd/truck-17/reboot", true),
            (Sub, "cmd/truck-17/+", true),
            (Sub, "cmd/truck-17/#", false),
            (Sub, "cmd/+/reboot", false),
            (Sub, "cmd/truck-18/reboot", false),
            // broadcast (`eu`, matched through the array attribute).
            (Sub, "broadcast/fire/alerts", true),
            (Sub, "broadcast/+/alerts", true),
            (Sub, "broadcast/all", true),
            (Sub, "broadcast/#", false),
            (Sub, "$share/ops/broadcast/+/alerts", true),
            (Sub, "$share/ops/broadcast/#", false),
            // public ($all).
            (Sub, "public/eu/#", true),
            (Sub, "public/eu/news/+", true),
            (Sub, "public/all", true),
            (Sub, "public/us/#", false),
            (Sub, "public/+/news", false),
            // Publisher spaces are not subscribable.
            (Sub, "fleet/eu/truck-17/telemetry/#", false),
            (Sub, "ev/#", false),
            (Sub, "#", false),
        ],
    );
}

#[test]
fn old_truck_outside_trucks_gets_tags_and_regional_but_not_arrays() {
    let p = policy().permissions(&truck_99());
    check(
        &p,
        "truck-99",
        &[
            // Not in `trucks` (year 2021).
            (Pub, "fleet/us/truck-99/telemetry", false),
            // `old`, but `tags/${client.attributes.zones}` has an array value: nothing.
            (Pub, "tags/us", false),
            // us-or-asia: regional with an integer attribute in a level.
            (Pub, "region/us/x/2021", true),
            (Pub, "region/us/x/2022", false),
            (Pub, "region/eu/x/2021", false),
            // Not `named`, not `electric`.
            (Pub, "status/dev-truck-99", false),
            (Pub, "ev/x", false),
            // Not `eu`: no broadcast. `$all`: public for its zone.
            (Sub, "broadcast/all", false),
            (Sub, "public/us/+", true),
            (Sub, "public/eu/+", false),
            (Sub, "cmd/truck-99/x", false),
        ],
    );
}

#[test]
fn car_matches_not_and_parentheses_and_scalar_zones() {
    let p = policy().permissions(&car_1());
    check(
        &p,
        "car-1",
        &[
            (Pub, "status/dev-car-1", true),
            (Pub, "ev/x", false),
            // `old` with a scalar zones attribute: tags/eu.
            (Pub, "tags/eu", true),
            (Pub, "fleet/eu/car-1/telemetry", false),
            (Sub, "ev/#", true),
            (Sub, "ev/+/x", true),
            (Sub, "broadcast/all", true),
            (Sub, "public/eu/#", true),
            (Sub, "cmd/car-1/x", false),
        ],
    );
}

#[test]
fn client_without_attributes_gets_only_all() {
    let p = policy().permissions(&client("nobody", &[]));
    check(
        &p,
        "nobody",
        &[
            (Pub, "public/all", false),
            (Pub, "status/dev-nobody", false),
            (Sub, "public/all", true),
            // public/${zone}/# has no value for it: nothing.
            (Sub, "public/+/#", false),
            (Sub, "public/#", false),
            (Sub, "broadcast/all", false),
        ],
    );
    assert_eq!(
        p.subscribe_filters().collect::<Vec<_>>(),
        [&b"public/all"[..]]
    );
    assert_eq!(p.publish_filters().count(), 0);
}

#[test]
fn role_assignments_at_namespace_and_topic_space_scope() {
    let policy = policy();
    let app = policy.permissions(&principal("oid-app"));
    check(
        &app,
        "oid-app",
        &[
            // Subscriber at `/`: every space, templates expanded for this client.
            (Sub, "ev/#", true),
            (Sub, "broadcast/all", true),
            (Sub, "cmd/app-1/x", true),
            (Sub, "cmd/other/x", false),
            (Sub, "fleet/eu/app-1/telemetry", false),
            // Publisher on /topicSpaces/status only.
            (Pub, "status/dev-app-1", true),
            (Pub, "ev/x", false),
        ],
    );
    let ops = policy.permissions(&principal("oid-ops"));
    check(
        &ops,
        "oid-ops",
        &[
            (Pub, "ev/x", true),
            (Pub, "broadcast/all", true),
            (Pub, "status/dev-app-1", true),
            (Sub, "ev/#", false),
        ],
    );
    let ro = policy.permissions(&principal("oid-ro"));
    check(
        &ro,
        "oid-ro",
        &[
            (Sub, "broadcast/+/alerts", true),
            (Sub, "ev/#", false),
            (Pub, "broadcast/all", false),
        ],
    );
    // A principal id in attributes or as the name does not count.
    let stranger = policy.permissions(&client("oid-app", &[]));
    check(&stranger, "oid-app by name", &[(Sub, "ev/#", false)]);
}

fn rules(r: &[&str]) -> Option<Arc<[String]>> {
    Some(r.iter().map(|s| (*s).to_owned()).collect())
}

#[test]
fn claim_rules_restrict_bindings() {
    let mut id = truck_17();
    id.pub_rules = rules(&["fleet/eu/truck-17/telemetry/engine/.*", "other/.*"]);
    id.sub_rules = rules(&["cmd/truck-17/[a-z]+"]);
    let p = policy().permissions(&id);
    check(
        &p,
        "truck-17 restricted",
        &[
            (Pub, "fleet/eu/truck-17/telemetry/engine/rpm", true),
            (Pub, "fleet/eu/truck-17/telemetry/gps", false),
            // Rules alone do not grant in restrict mode.
            (Pub, "other/x", false),
            // Anchored: a rule must match the whole topic.
            (Pub, "x/fleet/eu/truck-17/telemetry/engine/rpm", false),
            (Pub, "status/dev-truck-17", false),
            (Sub, "cmd/truck-17/reboot", true),
            // Matched against the filter as sent: `+` is not a letter.
            (Sub, "cmd/truck-17/+", false),
            (Sub, "$share/g/cmd/truck-17/reboot", true),
            (Sub, "broadcast/all", false),
        ],
    );
    // Publish rules only: subscriptions follow the bindings.
    let mut id = truck_17();
    id.pub_rules = rules(&[]);
    let p = policy().permissions(&id);
    check(
        &p,
        "truck-17 empty rules",
        &[
            (Pub, "fleet/eu/truck-17/telemetry", false),
            (Sub, "broadcast/all", true),
        ],
    );
}

#[test]
fn claim_rules_grant_alone() {
    let mut id = client("nobody", &[]);
    id.claim_rules_grant = true;
    id.pub_rules = rules(&["devices/nobody/.*", "(broken"]);
    let p = policy().permissions(&id);
    check(
        &p,
        "nobody granted",
        &[
            (Pub, "devices/nobody/x", true),
            (Pub, "devices/other/x", false),
            (Pub, "(broken", false),
            // No subscribe rules in grant mode: bindings do not apply, nothing is allowed.
            (Sub, "public/all", false),
        ],
    );
    // A truck in grant mode loses its bindings.
    let mut id = truck_17();
    id.claim_rules_grant = true;
    id.sub_rules = rules(&["#", "a/.*"]);
    let p = policy().permissions(&id);
    check(
        &p,
        "truck-17 granted",
        &[
            (Pub, "fleet/eu/truck-17/telemetry", false),
            (Sub, "#", true),
            (Sub, "a/+/#", true),
            (Sub, "cmd/truck-17/x", false),
        ],
    );
}

#[test]
fn allow_all_and_empty_policy() {
    let all = Permissions::allow_all();
    check(
        &all,
        "allow_all",
        &[
            (Pub, "a/b", true),
            (Sub, "#", true),
            (Sub, "$share/g/#", true),
        ],
    );
    let empty = Policy::default().permissions(&truck_17());
    check(&empty, "empty", &[(Pub, "a/b", false), (Sub, "#", false)]);
    let p = policy().permissions(&truck_17());
    // Malformed shared filters are refused, not looked into.
    check(
        &p,
        "truck-17",
        &[(Sub, "$share//public/all", false), (Sub, "$share/g", false)],
    );
}

#[test]
fn group_membership_is_queryable() {
    let policy = policy();
    assert_eq!(policy.in_group(&truck_17(), "trucks"), Some(true));
    assert_eq!(policy.in_group(&truck_99(), "trucks"), Some(false));
    assert_eq!(policy.in_group(&car_1(), "vintage"), Some(true));
    assert_eq!(policy.in_group(&truck_17(), "vintage"), Some(false));
    assert_eq!(policy.in_group(&truck_17(), "$all"), Some(true));
    assert_eq!(policy.in_group(&truck_17(), "nope"), None);
}

fn parse_err(root: Value) -> RegistryError {
    match parse_policy(&root, &mut Vec::new()) {
        Ok(p) => panic!("parsed: {p:?}"),
        Err(e) => e,
    }
}

#[test]
fn query_errors_name_the_group_and_position() {
    let e = parse_err(json!({ "clientGroups": [
        { "name": "ok", "query": "attributes.a = 1" },
        { "name": "trucks", "query": "attributes.type == 'truck'" }
    ]}));
    assert_eq!(e.path, "clientGroups[1].query");
    assert!(e.problem.contains("`trucks`"), "{e}");
    assert!(e.problem.contains("offset 17"), "{e}");
}

#[test]
fn references_and_values_are_checked_with_paths() {
    let base = registry();
    let with = |key: &str, value: Value| {
        let mut root = base.clone();
        root[key] = value;
        root
    };
    let cases = [
        (
            with(
                "permissionBindings",
                json!([{ "name": "b", "clientGroupName": "nope", "topicSpaceName": "ev", "permission": "Publisher" }]),
            ),
            "permissionBindings[0].clientGroupName",
        ),
        (
            with(
                "permissionBindings",
                json!([{ "name": "b", "clientGroupName": "trucks", "topicSpaceName": "nope", "permission": "Publisher" }]),
            ),
            "permissionBindings[0].topicSpaceName",
        ),
        (
            with(
                "permissionBindings",
                json!([{ "name": "b", "clientGroupName": "trucks", "topicSpaceName": "ev", "permission": "Owner" }]),
            ),
            "permissionBindings[0].permission",
        ),
        (
            with(
                "permissionBindings",
                json!([{ "name": "b", "clientGroupName": "trucks", "topicSpaceName": "ev" }]),
            ),
            "permissionBindings[0].permission",
        ),
        (
            with(
                "roleAssignments",
                json!([{ "principalId": "o", "roleDefinitionName": "EventGrid TopicSpaces Publisher", "scope": "/topicSpaces/nope" }]),
            ),
            "roleAssignments[0].scope",
        ),
        (
            with(
                "roleAssignments",
                json!([{ "principalId": "o", "roleDefinitionName": "Owner", "scope": "/" }]),
            ),
            "roleAssignments[0].roleDefinitionName",
        ),
        (
            with(
                "topicSpaces",
                json!([{ "name": "t", "topicTemplates": ["a/${client.attributes.x}", "a/#/b"] }]),
            ),
            "topicSpaces[0].topicTemplates[1]",
        ),
        (
            with(
                "topicSpaces",
                json!([{ "name": "t", "topicTemplates": ["a/${client.id}"] }]),
            ),
            "topicSpaces[0].topicTemplates[0]",
        ),
        (
            with(
                "topicSpaces",
                json!([{ "name": "t", "topicTemplates": (0..11).map(|i| format!("t/{i}")).collect::<Vec<_>>() }]),
            ),
            "topicSpaces[0].topicTemplates",
        ),
        (
            with(
                "topicSpaces",
                json!([{ "name": "t", "topicTemplates": [] }]),
            ),
            "topicSpaces[0].topicTemplates",
        ),
        (
            with(
                "topicSpaces",
                json!([{ "name": "t", "topicTemplates": ["a"] }, { "name": "t", "topicTemplates": ["b"] }]),
            ),
            "topicSpaces[1].name",
        ),
        (
            with(
                "clientGroups",
                json!([{ "name": "$all", "query": "attributes.a = 1" }]),
            ),
            "clientGroups[0].name",
        ),
        (
            with("clientGroups", json!([{ "name": "g", "query": 3 }])),
            "clientGroups[0].query",
        ),
        (
            with("clientGroups", json!([{ "name": "g" }])),
            "clientGroups[0].query",
        ),
        (with("clientGroups", json!({})), "clientGroups"),
        (with("clientGroups", json!(["g"])), "clientGroups[0]"),
    ];
    for (root, path) in cases {
        let e = parse_err(root);
        assert_eq!(e.path, path, "{e}");
    }
}

#[test]
fn unknown_keys_are_warnings_with_paths() {
    let mut root = registry();
    root["clientGroups"][0]["colour"] = json!("red");
    root["permissionBindings"][2]["scope"] = json!("/");
    root["someOtherSection"] = json!(1);
    let mut warnings = Vec::new();
    assert!(parse_policy(&root, &mut warnings).is_ok());
    assert_eq!(
        warnings,
        [
            "clientGroups[0].colour: ignored (not used by ringmq)",
            "permissionBindings[2].scope: ignored (not used by ringmq)",
        ]
    );
}

#[test]
fn arm_style_entries_with_properties() {
    let root = json!({
        "clientGroups": [{ "name": "trucks", "type": "Microsoft.EventGrid/namespaces/clientGroups",
            "properties": { "query": "attributes.type = 'truck'", "provisioningState": "Succeeded" } }],
        "topicSpaces": [{ "name": "t", "properties": { "topicTemplates": ["t/${client.authenticationName}"] } }],
        "permissionBindings": [{ "name": "b", "properties": {
            "clientGroupName": "trucks", "topicSpaceName": "t", "permission": "Publisher" } }]
    });
    let mut warnings = Vec::new();
    let policy = parse_policy(&root, &mut warnings).unwrap();
    assert_eq!(
        warnings,
        [
            "clientGroups[0].type: ignored (not used by ringmq)",
            "clientGroups[0].properties.provisioningState: ignored (not used by ringmq)",
        ]
    );
    let p = policy.permissions(&truck_17());
    assert!(p.allow_publish(b"t/truck-17"));
    let mut bad = root.clone();
    bad["permissionBindings"][0]["properties"]["topicSpaceName"] = json!("nope");
    assert_eq!(
        parse_err(bad).path,
        "permissionBindings[0].properties.topicSpaceName"
    );
    let mut bad = root;
    bad["clientGroups"][0]["properties"]["query"] = json!("attributes.type = ");
    let e = parse_err(bad);
    assert_eq!(e.path, "clientGroups[0].properties.query");
    assert!(e.problem.contains("offset 18"), "{e}");
}

/// docs/authorization.md's complete registry gives exactly the decisions of its table.
#[test]
fn documented_example_matches_its_table() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/authorization.md"
    ))
    .unwrap();
    let after_heading = doc.split("### The complete registry").nth(1).unwrap();
    let json_block = after_heading
        .split("```json")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let root: Value = serde_json::from_str(json_block).unwrap();
    let mut warnings = Vec::new();
    let policy = parse_policy(&root, &mut warnings).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let identity = |name: &str| {
        let clients = root["clients"].as_array().unwrap();
        let entry = clients
            .iter()
            .find(|c| c["authenticationName"] == name)
            .unwrap();
        let mut id = Identity::anonymous(name);
        for (k, v) in entry["attributes"].as_object().unwrap() {
            id.attributes.insert(k.clone(), attr(v));
        }
        id
    };
    let table = after_heading.split("What it allows:").nth(1).unwrap();
    let mut rows = 0;
    for line in table
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with('|'))
        .skip(2)
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (who, action, topic, allowed) =
            (cells[1], cells[2], cells[3].trim_matches('`'), cells[4]);
        let perms = policy.permissions(&identity(who));
        let got = match action {
            "PUBLISH" => perms.allow_publish(topic.as_bytes()),
            "SUBSCRIBE" => perms.allow_subscribe(topic.as_bytes()),
            other => panic!("action {other}"),
        };
        assert_eq!(got, allowed == "yes", "{line}");
        rows += 1;
    }
    assert!(rows >= 10, "{rows} rows");
}

fn attr(v: &Value) -> AttrValue {
    match v {
        Value::String(s) => AttrValue::String(s.clone()),
        Value::Number(n) => AttrValue::Integer(n.as_i64().unwrap()),
        Value::Bool(b) => AttrValue::Bool(*b),
        Value::Array(items) => AttrValue::Array(items.iter().map(attr).collect()),
        other => panic!("attribute {other}"),
    }
}

/// Through the registry file and the snapshot, as the broker sees it.
#[test]
fn snapshot_permissions_come_from_the_registry_file() {
    let text = registry().to_string();
    let mut warnings = Vec::new();
    let reg = ringmq_auth::registry::Registry::parse(&text, &mut warnings).unwrap();
    let snapshot = ringmq_auth::Snapshot {
        version: 1,
        allow_anonymous: false,
        registry: Some(reg),
        files: Default::default(),
    };
    let p = snapshot.permissions(&truck_17());
    assert!(p.allow_publish(b"fleet/eu/truck-17/telemetry/x"));
    assert!(!p.allow_publish(b"fleet/eu/truck-18/telemetry/x"));
    assert!(p.allow_subscribe(b"cmd/truck-17/+"));
    let mut broken = registry();
    broken["clientGroups"][0]["query"] = json!("attributes.type = 'truck' AND");
    let e =
        ringmq_auth::registry::Registry::parse(&broken.to_string(), &mut Vec::new()).unwrap_err();
    assert_eq!(e.path, "clientGroups[0].query");
}
