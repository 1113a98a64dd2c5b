//! CA-only client certificates (`[auth] client_ca`, `certificate_identity`) through the real
//! binary with `mosquitto_pub/sub --cafile --cert --key`: no registry, any certificate issued
//! by the configured CA is accepted and named by the chosen field, and that name is the user
//! name of the ACL file (`user NAME`, `%u`). A certificate from another CA, or one lacking the
//! field, is refused with CONNACK 0x86 (mosquitto exits with 134; 3.1.1: return code 4) and a
//! log line saying why. A reloaded `client_crl` disconnects the client it revokes.
//!
//! Chain, CRL and identity-field cases are unit-tested in auth/src/x509/client_ca.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use ringmq_tests::pki::{Pki, TlsBroker};
use ringmq_tests::tools::{SUB_FORMAT, TOOL_TIMEOUT, Tool, ToolOutput};

const MOSQUITTO_INSTALL: &str = "apt-get install -y mosquitto-clients";

const ACL: &str = "\
user dev-admin
topic readwrite #

pattern readwrite devices/%u/#
pattern read fleet/%u
";

/// A broker whose mqtts listener requires a client certificate, trusting `ca.pem` of the PKI
/// as client CA, with the ACL above; `identity` is `certificate_identity`.
fn start(pki: &Pki, identity: &str) -> TlsBroker {
    fs::write(pki.dir.join("acl.conf"), ACL).unwrap();
    TlsBroker::start(
        pki,
        "required",
        &format!(
            "[auth]\nclient_ca = \"ca.pem\"\ncertificate_identity = \"{identity}\"\nacl_file = \"acl.conf\"\n"
        ),
    )
}

/// A client certificate `{file}.pem`/`.key` issued by the PKI's CA, with subject CN `cn` and
/// one SAN DNS name `dns` (none when empty).
fn leaf_with_dns(pki: &Pki, file: &str, cn: &str, dns: &str) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if !dns.is_empty() {
        params
            .subject_alt_names
            .push(SanType::DnsName(dns.try_into().unwrap()));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &pki.ca).unwrap();
    fs::write(pki.dir.join(format!("{file}.pem")), cert.pem()).unwrap();
    fs::write(pki.dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
}

fn tls(pki: &Pki, b: &TlsBroker, cert: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        b.tls_port.to_string(),
        "--cafile".into(),
        pki.path("ca.pem"),
        "--cert".into(),
        pki.path(&format!("{cert}.pem")),
        "--key".into(),
        pki.path(&format!("{cert}.key")),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn mosquitto_pub(args: Vec<String>) -> ToolOutput {
    Tool::spawn("mosquitto_pub", &args, MOSQUITTO_INSTALL).wait(TOOL_TIMEOUT)
}

fn mosquitto_sub(args: Vec<String>) -> ToolOutput {
    let mut all = args;
    all.extend(["-d".to_owned(), "-F".to_owned(), SUB_FORMAT.to_owned()]);
    Tool::spawn("mosquitto_sub", &all, MOSQUITTO_INSTALL).wait(TOOL_TIMEOUT)
}

/// The broker's log without its colour escapes (`ESC [ ... m`).
fn plain_log(b: &TlsBroker) -> String {
    let mut out = String::new();
    let mut in_escape = false;
    for c in b.log().chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (false, c) => out.push(c),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    out
}

fn suback_codes(o: &ToolOutput) -> String {
    o.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Subscribed (mid: 1): "))
        .unwrap_or_else(|| panic!("no SUBACK line in {o}"))
        .to_owned()
}

/// The subject CN names the client: `%u` in the ACL is the CN, publish and subscribe are
/// allowed inside `devices/<CN>/` only, and `user <CN>` selects a section.
#[test]
fn common_name_is_the_acl_user() {
    let pki = Pki::new();
    pki.leaf("dev7", "dev-7", &pki.ca);
    pki.leaf("admin", "dev-admin", &pki.ca);
    let b = start(&pki, "subject-cn");
    let args = ["-V", "5", "-q", "1", "-d", "-m", "x"];
    let own = mosquitto_pub(tls(
        &pki,
        &b,
        "dev7",
        &[&args[..], &["-t", "devices/dev-7/t"]].concat(),
    ));
    own.assert_success();
    assert!(
        own.stdout.contains("received PUBACK (Mid: 1, RC:0)"),
        "{own}"
    );
    let other = mosquitto_pub(tls(
        &pki,
        &b,
        "dev7",
        &[&args[..], &["-t", "devices/dev-8/t"]].concat(),
    ));
    assert!(
        other.stdout.contains("received PUBACK (Mid: 1, RC:135)"),
        "{other}"
    );
    let sub = mosquitto_sub(tls(
        &pki,
        &b,
        "dev7",
        &[
            "-V",
            "5",
            "-W",
            "1",
            "-t",
            "devices/dev-7/#",
            "-t",
            "fleet/dev-7",
            "-t",
            "devices/#",
        ],
    ));
    assert_eq!(suback_codes(&sub), "0, 0, 135", "{sub}");
    // The user section of the CN `dev-admin` grants everything.
    let admin = mosquitto_sub(tls(
        &pki,
        &b,
        "admin",
        &["-V", "311", "-W", "1", "-t", "devices/#"],
    ));
    assert_eq!(suback_codes(&admin), "0", "{admin}");
    let log = plain_log(&b);
    assert!(
        log.contains("authentication_name=dev-7 method=Certificate"),
        "{log}"
    );
}

/// `certificate_identity = "san-dns"`: the first SAN DNS name is the name (the CN is not
/// looked at); a certificate without one is refused with 0x86 and the reason logged.
#[test]
fn san_dns_is_the_acl_user_and_a_certificate_without_it_is_refused() {
    let pki = Pki::new();
    leaf_with_dns(&pki, "dns", "ignored-cn", "dev9.fleet.example");
    leaf_with_dns(&pki, "nodns", "dev-10", "");
    let b = start(&pki, "san-dns");
    let ok = mosquitto_pub(tls(
        &pki,
        &b,
        "dns",
        &[
            "-V",
            "5",
            "-q",
            "1",
            "-d",
            "-m",
            "x",
            "-t",
            "devices/dev9.fleet.example/t",
        ],
    ));
    assert!(ok.stdout.contains("received PUBACK (Mid: 1, RC:0)"), "{ok}");
    let cn = mosquitto_pub(tls(
        &pki,
        &b,
        "dns",
        &[
            "-V",
            "5",
            "-q",
            "1",
            "-d",
            "-m",
            "x",
            "-t",
            "devices/ignored-cn/t",
        ],
    ));
    assert!(
        cn.stdout.contains("received PUBACK (Mid: 1, RC:135)"),
        "{cn}"
    );
    let refused = mosquitto_pub(tls(
        &pki,
        &b,
        "nodns",
        &["-V", "5", "-t", "devices/x", "-m", "x"],
    ));
    assert_eq!(
        refused.status.and_then(|s| s.code()),
        Some(134),
        "{refused}"
    );
    assert!(
        b.log().contains("the certificate has no san-dns"),
        "{}",
        b.log()
    );
}

/// A certificate from a CA that is not `client_ca` passes the TLS handshake (policy is the
/// broker's, not rustls's) and is refused at CONNECT: 0x86, and 3.1.1 return code 4.
#[test]
fn certificate_of_another_ca_is_refused() {
    let pki = Pki::new();
    pki.leaf("rogue", "dev-7", &pki.rogue);
    let b = start(&pki, "subject-cn");
    let v5 = mosquitto_pub(tls(
        &pki,
        &b,
        "rogue",
        &["-V", "5", "-t", "devices/dev-7/t", "-m", "x"],
    ));
    assert_eq!(v5.status.and_then(|s| s.code()), Some(134), "{v5}");
    let v3 = mosquitto_pub(tls(
        &pki,
        &b,
        "rogue",
        &["-V", "311", "-t", "devices/dev-7/t", "-m", "x"],
    ));
    assert_eq!(v3.status.and_then(|s| s.code()), Some(4), "{v3}");
    assert!(b.log().contains("unknown CA"), "{}", b.log());
}

/// `client_crl` is watched with the client CA: a new CRL that revokes a connected client's
/// certificate disconnects it (DISCONNECT 0x87) and refuses it afterwards (0x86); the log says
/// why.
#[test]
fn a_reloaded_crl_disconnects_the_revoked_client() {
    let pki = Pki::new();
    pki.leaf_with_serial("dev", "dev-7", &pki.ca, 7);
    fs::write(pki.dir.join("crl.pem"), pki.crl(&pki.ca, &[999])).unwrap();
    fs::write(pki.dir.join("acl.conf"), ACL).unwrap();
    let b = TlsBroker::start(
        &pki,
        "required",
        "[auth]\nclient_ca = \"ca.pem\"\nclient_crl = \"crl.pem\"\nacl_file = \"acl.conf\"\n",
    );
    let mut all = vec!["-oL".to_owned(), "mosquitto_sub".to_owned()];
    all.extend(tls(
        &pki,
        &b,
        "dev",
        &["-V", "5", "-t", "devices/dev-7/#", "-W", "15", "-d"],
    ));
    let mut sub = Tool::spawn("stdbuf", &all, MOSQUITTO_INSTALL);
    sub.wait_for_stdout("received SUBACK", TOOL_TIMEOUT);

    fs::write(pki.dir.join("crl.pem"), pki.crl(&pki.ca, &[7])).unwrap();
    let o = sub.wait(TOOL_TIMEOUT);
    assert!(
        format!("{}{}", o.stdout, o.stderr).contains("DISCONNECT (135)"),
        "disconnected with 0x87: {o}\n{}",
        b.log()
    );
    let again = mosquitto_pub(tls(
        &pki,
        &b,
        "dev",
        &["-V", "5", "-t", "devices/dev-7/t", "-m", "x"],
    ));
    assert_eq!(again.status.and_then(|s| s.code()), Some(134), "{again}");
    assert!(plain_log(&b).contains("certificate revoked"), "{}", b.log());
}
