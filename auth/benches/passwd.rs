//! A password-file check as the authentication pool runs it on a cache miss: `$7$`
//! (PBKDF2-HMAC-SHA512, 101 iterations, mosquitto_passwd 2.0's default) and `$6$` (one
//! SHA-512), a right and a wrong password.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroU32;

use criterion::{Criterion, criterion_group, criterion_main};
use ringmq_auth::passwd::{DEFAULT_ITERATIONS, Hash, PasswordFile, update_text};

fn bench(c: &mut Criterion) {
    let h7 = Hash::new_pbkdf2(b"secret", NonZeroU32::new(DEFAULT_ITERATIONS).unwrap()).unwrap();
    let text = update_text("", "alice", &h7);
    // A `$6$` line for bob, made the way mosquitto 1.x did.
    let six = "bob:$6$MDEyMzQ1Njc4OWFiY2RlZg==$ITN4JfiGQSNfRwKeWdxc9FOIhv5uZdrJ07RWSA1SNPJ7wbpT9hGfM/9CJ3IeDc+iEUThtKCc2kY/qLIgbSOTHw==\n";
    let file = PasswordFile::parse(&format!("{text}{six}")).unwrap();
    let mut group = c.benchmark_group("password_file");
    group.bench_function("$7$ 101 iterations, right", |b| {
        b.iter(|| assert!(file.verify("alice", b"secret")))
    });
    group.bench_function("$7$ 101 iterations, wrong", |b| {
        b.iter(|| assert!(!file.verify("alice", b"secreT")))
    });
    group.bench_function("$6$, wrong", |b| {
        b.iter(|| assert!(!file.verify("bob", b"x")))
    });
    group.bench_function("unknown user", |b| {
        b.iter(|| assert!(!file.verify("nobody", b"x")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
