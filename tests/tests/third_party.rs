//! Third-party clients against the broker: mosquitto_pub / mosquitto_sub (2.0) with `-V 5` and
//! `-V 311`, and paho-mqtt 2.x scripts (tests/py/) in MQTT 5 and 3.1.1. A missing tool fails
//! the test with the install command (never a skip).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use bytes::Bytes;
use ringmq_codec::*;
use ringmq_tests::tools::*;
use ringmq_tests::*;

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// mosquitto_pub publishes at QoS 0, 1 and 2 (v5 and 3.1.1); our QoS 2 subscriber gets each
/// payload with the published QoS.
#[test]
fn mosquitto_pub_qos_levels_reach_subscriber() {
    let b = Broker::default_start();
    let mut sub = b.v5("mp-sub");
    sub.subscribe_ok("mp/#", QoS::ExactlyOnce);
    for version in ["5", "311"] {
        for q in 0..3u8 {
            let topic = format!("mp/{version}/{q}");
            let payload = format!("mosquitto v{version} qos{q}");
            let qs = q.to_string();
            mosquitto_pub(
                &b,
                &["-V", version, "-q", &qs, "-t", &topic, "-m", &payload],
            )
            .assert_success();
            let m = sub.expect_publish_acked();
            assert_eq!((m.topic.as_str(), text(&m)), (topic.as_str(), payload));
            assert_eq!(m.qos_pid.qos(), QOS[q as usize]);
        }
    }
}

/// mosquitto_sub (v5 and 3.1.1, subscribed at QoS 2) receives our QoS 0/1/2 messages with
/// exact payloads and QoS.
#[test]
fn mosquitto_sub_receives_qos_levels() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    for version in ["5", "311"] {
        let topic = format!("ms/{version}");
        let sub = mosquitto_sub(
            &b,
            &[
                "-V", version, "-q", "2", "-t", &topic, "-C", "3", "-W", "15",
            ],
        );
        let mut p = b.v5(&format!("ms-pub-{version}"));
        for (i, qos) in QOS.iter().enumerate() {
            p.publish(msg(&topic, format!("m{i}")).qos(*qos));
        }
        let out = sub.wait(TOOL_TIMEOUT);
        out.assert_success();
        let got: Vec<(String, u8, String)> = out
            .messages()
            .into_iter()
            .map(|m| (m.topic, m.qos, m.payload))
            .collect();
        let want: Vec<(String, u8, String)> = (0..3)
            .map(|i| (topic.clone(), i as u8, format!("m{i}")))
            .collect();
        assert_eq!(got, want, "{out}");
    }
}

/// mosquitto_pub -r stores a retained message that a later mosquitto_sub (v5 and 3.1.1) gets
/// with the retain flag; an empty retained message (`-n -r`) clears it.
#[test]
fn mosquitto_retained_set_and_clear() {
    let b = Broker::default_start();
    mosquitto_pub(
        &b,
        &["-V", "5", "-q", "1", "-r", "-t", "mr/t", "-m", "kept"],
    )
    .assert_success();
    for version in ["5", "311"] {
        let out = mosquitto_sub(&b, &["-V", version, "-t", "mr/t", "-C", "1", "-W", "15"])
            .wait(TOOL_TIMEOUT);
        out.assert_success();
        let m = out.messages();
        assert_eq!(m.len(), 1, "{out}");
        assert_eq!(
            (m[0].payload.as_str(), m[0].retain),
            ("kept", true),
            "{out}"
        );
    }
    mosquitto_pub(&b, &["-V", "311", "-q", "1", "-r", "-t", "mr/t", "-n"]).assert_success();
    let mut c = b.v5("mr-check");
    c.subscribe_ok("mr/t", QoS::AtLeastOnce);
    c.expect_nothing(QUIET);
}

/// mosquitto_sub with `--will-topic` (v5 and 3.1.1), killed: the broker publishes its will.
#[test]
fn mosquitto_will_published_when_client_killed() {
    let b = Broker::default_start();
    let mut watch = b.v5("mw-watch");
    watch.subscribe_ok("mw/#", QoS::AtLeastOnce);
    for version in ["5", "311"] {
        let topic = format!("mw/{version}");
        let payload = format!("will-{version}");
        let sub = mosquitto_sub(
            &b,
            &[
                "-V",
                version,
                "-t",
                "mw-none",
                "--will-topic",
                &topic,
                "--will-payload",
                &payload,
                "--will-qos",
                "1",
                "-W",
                "30",
            ],
        );
        drop(sub); // SIGKILL: no DISCONNECT reaches the broker
        let m = watch.expect_publish_acked();
        assert_eq!((m.topic.as_str(), text(&m)), (topic.as_str(), payload));
    }
}

/// mosquitto_pub -V 5 `-D publish ...` properties reach our client unchanged: user properties
/// (order kept), content type, response topic, correlation data.
#[test]
fn mosquitto_pub_v5_properties_forwarded() {
    let b = Broker::default_start();
    let mut sub = b.v5("mpp-sub");
    sub.subscribe_ok("mpp/t", QoS::AtLeastOnce);
    mosquitto_pub(
        &b,
        &[
            "-V",
            "5",
            "-q",
            "1",
            "-t",
            "mpp/t",
            "-m",
            "props",
            "-D",
            "publish",
            "user-property",
            "first",
            "1",
            "-D",
            "publish",
            "user-property",
            "second",
            "2",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "mpp/reply",
            "-D",
            "publish",
            "correlation-data",
            "corr-7",
        ],
    )
    .assert_success();
    let m = sub.expect_publish_acked();
    assert_eq!(text(&m), "props");
    let p = &m.properties;
    assert_eq!(
        pairs(&p.user_properties),
        [("first".into(), "1".into()), ("second".into(), "2".into())]
    );
    assert_eq!(p.content_type.as_ref().map(Str::as_str), Some("text/plain"));
    assert_eq!(
        p.response_topic.as_ref().map(Str::as_str),
        Some("mpp/reply")
    );
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr-7"[..]));
}

/// mosquitto_sub -V 5 prints the user properties, content type, response topic and correlation
/// data of our v5 message exactly.
#[test]
fn mosquitto_sub_v5_receives_properties() {
    let b = Broker::default_start();
    let sub = mosquitto_sub(
        &b,
        &["-V", "5", "-q", "1", "-t", "msp/t", "-C", "1", "-W", "15"],
    );
    let mut p = b.v5("msp-pub");
    p.publish(
        msg("msp/t", "with-props")
            .qos(QoS::AtLeastOnce)
            .props(|pr| {
                pr.user_properties = user_props(&[("k1", "v1"), ("k2", "v2")]);
                pr.content_type = Some(s("application/x-test"));
                pr.response_topic = Some(s("msp/reply"));
                pr.correlation_data = Some(Bytes::from_static(b"cd-1"));
            }),
    );
    let out = sub.wait(TOOL_TIMEOUT);
    out.assert_success();
    let m = out.messages();
    assert_eq!(m.len(), 1, "{out}");
    let m = &m[0];
    assert_eq!(m.payload, "with-props");
    assert_eq!(m.user_props, "k1:v1 k2:v2", "{out}");
    assert_eq!(
        (
            m.content_type.as_str(),
            m.response_topic.as_str(),
            m.correlation_data.as_str()
        ),
        ("application/x-test", "msp/reply", "cd-1")
    );
}

/// mosquitto_pub 3.1.1 to mosquitto_sub v5 through the broker (both third-party), across shards.
#[test]
fn mosquitto_pub_v311_to_mosquitto_sub_v5() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let sub = mosquitto_sub(
        &b,
        &["-V", "5", "-q", "1", "-t", "mx/+", "-C", "4", "-W", "15"],
    );
    for i in 0..4 {
        let topic = format!("mx/{i}");
        let payload = format!("p{i}");
        mosquitto_pub(&b, &["-V", "311", "-q", "1", "-t", &topic, "-m", &payload]).assert_success();
    }
    let out = sub.wait(TOOL_TIMEOUT);
    out.assert_success();
    let got: Vec<(String, String)> = out
        .messages()
        .into_iter()
        .map(|m| (m.topic, m.payload))
        .collect();
    let want: Vec<(String, String)> = (0..4)
        .map(|i| (format!("mx/{i}"), format!("p{i}")))
        .collect();
    assert_eq!(got, want, "{out}");
}

/// paho-mqtt (MQTT 5 and 3.1.1): connect, subscribe at QoS 2, publish at QoS 0/1/2; each message
/// arrives with the published QoS and exact payload, in order.
#[test]
fn paho_roundtrip_qos_levels() {
    let b = Broker::default_start();
    for version in ["5", "311"] {
        let topic = format!("paho/rt/{version}");
        let port = b.port().to_string();
        let out = python(
            "paho_roundtrip.py",
            &["--port", &port, "--version", version, "--topic", &topic],
        )
        .wait(TOOL_TIMEOUT);
        out.assert_success();
        let got: Vec<(String, String, u8)> = out
            .py_messages()
            .into_iter()
            .map(|m| (m.topic.clone(), m.payload_text(), m.qos))
            .collect();
        let want: Vec<(String, String, u8)> = (0..3)
            .map(|q| (topic.clone(), format!("qos{q}"), q as u8))
            .collect();
        assert_eq!(got, want, "{out}");
    }
}

/// paho-mqtt publishes retained (v5 and 3.1.1); a later paho subscriber gets it with the retain
/// flag, and our client too.
#[test]
fn paho_retained_message() {
    let b = Broker::default_start();
    for version in ["5", "311"] {
        let topic = format!("paho/ret/{version}");
        paho_pub(&b, version, &topic, 1, &["--retain", "--message", "stored"]);
        let out = paho_sub(&b, version, &topic, 1, 1, &[]).wait(TOOL_TIMEOUT);
        out.assert_success();
        let m = out.py_messages();
        assert_eq!(m.len(), 1, "{out}");
        assert_eq!(
            (m[0].payload_text().as_str(), m[0].retain, m[0].qos),
            ("stored", true, 1),
            "{out}"
        );
    }
    let mut c = b.v3("paho-ret-check");
    c.subscribe_ok("paho/ret/+", QoS::AtLeastOnce);
    let mut got: Vec<String> = c
        .expect_publishes(2)
        .iter()
        .map(|m| format!("{}={}", m.topic, text(m)))
        .collect();
    got.sort();
    assert_eq!(got, ["paho/ret/311=stored", "paho/ret/5=stored"]);
}

/// A shared subscription with two paho-mqtt v5 members (likely on different shards): 20 messages
/// are split between them, each delivered exactly once.
#[test]
fn paho_shared_subscription_members() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    // Each member waits for up to 20 messages, so it runs until its timeout: keep that short.
    let extra_a = ["--id", "paho-share-a", "--timeout", "4", "--allow-fewer"];
    let extra_b = ["--id", "paho-share-b", "--timeout", "4", "--allow-fewer"];
    let a = paho_sub(&b, "5", "$share/pg/paho/share", 1, 20, &extra_a);
    let c = paho_sub(&b, "5", "$share/pg/paho/share", 1, 20, &extra_b);
    let mut p = b.v5("paho-share-pub");
    for i in 0..20 {
        p.publish(msg("paho/share", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    // Neither member gets all 20, so both run to their timeout and print what they got.
    let (oa, oc) = (a.wait(TOOL_TIMEOUT), c.wait(TOOL_TIMEOUT));
    oa.assert_success();
    oc.assert_success();
    let ga: Vec<String> = oa.py_messages().iter().map(PyMsg::payload_text).collect();
    let gc: Vec<String> = oc.py_messages().iter().map(PyMsg::payload_text).collect();
    let all: Vec<String> = ga.iter().chain(gc.iter()).cloned().collect();
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(
        all.len(),
        20,
        "each message exactly once: a={ga:?} b={gc:?}\n{oa}\n{oc}"
    );
    assert_eq!(unique.len(), 20, "no duplicates: a={ga:?} b={gc:?}");
    assert!(
        !ga.is_empty() && !gc.is_empty(),
        "both members get a share: a={ga:?} b={gc:?}"
    );
}

/// paho-mqtt v5 PUBLISH properties (user properties, content type, response topic, correlation
/// data, message expiry) reach our client; ours reach a paho v5 subscriber, with its
/// subscription identifier.
#[test]
fn paho_v5_properties_round_trip() {
    let b = Broker::default_start();
    let mut sub = b.v5("pp-sub");
    sub.subscribe_ok("paho/props/in", QoS::AtLeastOnce);
    paho_pub(
        &b,
        "5",
        "paho/props/in",
        1,
        &[
            "--message",
            "from-paho",
            "--user-prop",
            "a=1",
            "--user-prop",
            "b=2",
            "--content-type",
            "text/csv",
            "--response-topic",
            "paho/props/reply",
            "--correlation-hex",
            "00ff10",
            "--expiry",
            "300",
        ],
    );
    let m = sub.expect_publish_acked();
    let p = &m.properties;
    assert_eq!(text(&m), "from-paho");
    assert_eq!(
        pairs(&p.user_properties),
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(p.content_type.as_ref().map(Str::as_str), Some("text/csv"));
    assert_eq!(
        p.response_topic.as_ref().map(Str::as_str),
        Some("paho/props/reply")
    );
    assert_eq!(p.correlation_data.as_deref(), Some(&[0x00, 0xFF, 0x10][..]));
    let left = p.message_expiry_secs.expect("expiry forwarded");
    assert!((290..=300).contains(&left), "{left}");

    let ps = paho_sub(&b, "5", "paho/props/out", 1, 1, &["--sub-id", "42"]);
    let mut publ = b.v5("pp-pub");
    publ.publish(
        msg("paho/props/out", "from-ringmq-client")
            .qos(QoS::AtLeastOnce)
            .props(|pr| {
                pr.user_properties = user_props(&[("x", "y"), ("x", "z")]);
                pr.content_type = Some(s("application/octet-stream"));
                pr.response_topic = Some(s("paho/props/back"));
                pr.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
            }),
    );
    let out = ps.wait(TOOL_TIMEOUT);
    out.assert_success();
    let got = out.py_messages();
    assert_eq!(got.len(), 1, "{out}");
    let g = &got[0];
    assert_eq!(g.payload_text(), "from-ringmq-client");
    assert_eq!(
        g.user_props,
        [
            ("x".to_owned(), "y".to_owned()),
            ("x".to_owned(), "z".to_owned())
        ]
    );
    assert_eq!(g.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(g.response_topic.as_deref(), Some("paho/props/back"));
    assert_eq!(g.correlation_data.as_deref(), Some(&[1u8, 2][..]));
    assert_eq!(g.sub_ids, [42], "subscription identifier: {out}");
}

/// paho-mqtt 3.1.1 publisher to a mosquitto_sub v5 subscriber and a paho v5 subscriber.
#[test]
fn paho_v311_publisher_to_mixed_subscribers() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let ms = mosquitto_sub(
        &b,
        &["-V", "5", "-q", "2", "-t", "mix/t", "-C", "2", "-W", "15"],
    );
    let ps = paho_sub(&b, "5", "mix/t", 2, 2, &[]);
    paho_pub(
        &b,
        "311",
        "mix/t",
        2,
        &["--message", "one", "--message", "two"],
    );
    let mo = ms.wait(TOOL_TIMEOUT);
    mo.assert_success();
    let po = ps.wait(TOOL_TIMEOUT);
    po.assert_success();
    let got_m: Vec<(String, u8)> = mo
        .messages()
        .into_iter()
        .map(|m| (m.payload, m.qos))
        .collect();
    let got_p: Vec<(String, u8)> = po
        .py_messages()
        .iter()
        .map(|m| (m.payload_text(), m.qos))
        .collect();
    let want = vec![("one".to_owned(), 2u8), ("two".to_owned(), 2u8)];
    assert_eq!(got_m, want, "{mo}");
    assert_eq!(got_p, want, "{po}");
}

/// mosquitto_sub with a persistent session (`-c`, v5 with `-x 60`, and 3.1.1): messages published
/// while it is away are delivered when it comes back.
#[test]
fn mosquitto_sub_persistent_session_gets_queued_messages() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    for (version, extra) in [("5", vec!["-x", "60"]), ("311", vec![])] {
        let id = format!("ms-persist-{version}");
        let topic = format!("mpers/{version}");
        let mut first = vec![
            "-V", version, "-c", "-i", &id, "-q", "1", "-t", &topic, "-E",
        ];
        first.extend(extra.iter().copied());
        // -E: exit once subscribed; the session stays.
        mosquitto_sub(&b, &first)
            .wait(TOOL_TIMEOUT)
            .assert_success();
        let mut p = b.v5(&format!("mpers-pub-{version}"));
        p.publish(msg(&topic, "while-away").qos(QoS::AtLeastOnce));
        let mut again = vec![
            "-V", version, "-c", "-i", &id, "-q", "1", "-t", &topic, "-C", "1", "-W", "15",
        ];
        again.extend(extra.iter().copied());
        let out = mosquitto_sub_spawn(&b, &again).wait(TOOL_TIMEOUT);
        out.assert_success();
        let m = out.messages();
        assert_eq!(m.len(), 1, "{out}");
        assert_eq!(
            (m[0].payload.as_str(), m[0].qos),
            ("while-away", 1),
            "{out}"
        );
    }
}

/// paho-mqtt (MQTT 5) announcing a small Maximum Packet Size: a refusing CONNACK and a refusing
/// PUBACK come without the Reason String that would not fit ([MQTT-3.2.2-19], [MQTT-3.4.2-2]),
/// and with it when it fits.
#[test]
fn paho_reason_strings_fit_the_maximum_packet_size() {
    let b = Broker::start(BrokerOpts::new().limits("max_client_id_len = 23"));
    let port = b.port().to_string();
    let long = "x".repeat(24);
    let run = |id: &str, max: &str, publish: Option<&str>| {
        let mut args = vec!["--port", &port, "--id", id, "--max-packet-size", max];
        if let Some(topic) = publish {
            args.extend(["--publish-to", topic]);
        }
        let out = python("paho_max_packet.py", &args).wait(TOOL_TIMEOUT);
        out.assert_success();
        out.lines()
    };
    // CONNACK 0x85 (133): 34 bytes with its Reason String.
    assert_eq!(run(&long, "16", None), ["CONNACK rc=133 reason=0"]);
    assert_eq!(run(&long, "34", None), ["CONNACK rc=133 reason=1"]);
    // PUBACK 0x87 (135) for a $SYS topic: 47 bytes with its Reason String.
    assert_eq!(
        run("paho-small", "46", Some("$SYS/x")),
        ["CONNACK rc=0 reason=0", "PUBACK rc=135 reason=0"]
    );
    assert_eq!(
        run("paho-room", "0", Some("$SYS/x")),
        ["CONNACK rc=0 reason=0", "PUBACK rc=135 reason=1"]
    );
}
