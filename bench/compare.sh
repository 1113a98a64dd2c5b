#!/usr/bin/env bash
# Builds ringmq and ringmq-bench in release mode and compares ringmq with mosquitto (and
# rumqttd when it is installed) on this machine; rewrites the broker section of
# docs/benchmarks.md and docs/benchmarks.svg.
#
#   bench/compare.sh                      # all default scenarios (~2 min per broker)
#   bench/compare.sh --scenarios quick    # seconds-long smoke run
#   bench/compare.sh --scenarios p2p-qos0,latency
#   bench/compare.sh --scenarios p2p-qos0,p2p-tls   # plain and TLS side by side
#   bench/compare.sh --persistence        # persistent sessions: ringmq fsync always, ringmq
#                                         # memory only, mosquitto persistence true (issue 14;
#                                         # bench/scripts/persist_compare.sh, its env applies)
#
# Environment: CARGO_TARGET_DIR (default: target/), RINGMQ_SHARDS (default: nproc),
# MOSQUITTO (default: mosquitto on PATH, else /usr/sbin/mosquitto), RUMQTTD (default: rumqttd
# on PATH or in ~/.cargo/bin; set RUMQTTD=none to skip it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ "${1:-}" == --persistence ]]; then
  cargo build --release -p ringmq -p ringmq-bench
  exec bench/scripts/persist_compare.sh
fi
target="${CARGO_TARGET_DIR:-$root/target}"
shards="${RINGMQ_SHARDS:-$(nproc)}"

cargo build --release -p ringmq -p ringmq-bench

# 10 000 connections need as many descriptors in the load generator and in each broker
# (which inherits this limit).
ulimit -n "$(ulimit -Hn)" || true

mosquitto="${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
brokers=(
  # {config}: a generated file with the plain listener on {port} and, for the *-tls scenarios,
  # an mqtts listener with certificates made for the run.
  --broker "ringmq=$target/release/ringmq --config {config} --shards $shards --log-level warn"
  --broker "mosquitto=$mosquitto -c {config}"
)
rumqttd="${RUMQTTD:-$(command -v rumqttd || echo "$HOME/.cargo/bin/rumqttd")}"
if [[ "$rumqttd" != none && -x "$rumqttd" ]]; then
  # rumqttd's MQTT 5 listener is experimental: it is measured over MQTT 3.1.1.
  brokers+=(--broker "rumqttd:4=$rumqttd -q -c {config}")
else
  echo "rumqttd not found (cargo install rumqttd): comparing without it" >&2
fi

mkdir -p "$target/bench-compare"
exec "$target/release/ringmq-bench" compare "${brokers[@]}" \
  --baseline mosquitto \
  --out docs/benchmarks.md \
  --json "$target/bench-compare/results.json" \
  --work-dir "$target/bench-compare" \
  "$@"
