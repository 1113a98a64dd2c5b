#!/usr/bin/env bash
# Reproduction of a loss found by persist_recovery.sh (docs/benchmarks.md, "Persistence",
# "Problems found"): a broker restarted on a large log snapshots right after it restored its
# state; killed during that snapshot, the next start cuts a torn tail and restores fewer queued
# messages than were acknowledged. Fills SESSIONS sessions with MESSAGES queued QoS 1 messages,
# kill -9, restart; DELAY seconds after both shards logged "state restored" and a new segment
# appeared (the snapshot's begin marker opens one) the broker is
# stopped (SIGSTOP), its directory copied (a crash image: what a kill -9 at that instant
# leaves), and killed; a broker started on the image must restore MESSAGES queued messages.
# On 8 December 2026 every image taken while the snapshot was being written restored 4-15
# fewer (with and without a torn tail).
#
# Environment: SESSIONS (100000), MESSAGES (1000000), DELAY (0.1), as persist_recovery.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
sessions="${SESSIONS:-100000}"; messages="${MESSAGES:-1000000}"; delay="${DELAY:-0.1}"
ringmq="${RINGMQ:-$root/target/release/ringmq}"
bench="${RINGMQ_BENCH:-$root/target/release/ringmq-bench}"
work="$(mktemp -d -t ringmq-snapcrash-XXXXXX)"
ulimit -n "$(ulimit -Hn)" || true
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
printf '[storage]\ndir = "%s/store"\n' "$work" > "$work/ringmq.toml"
pid=""
trap '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true' EXIT
# start: spawns the broker and remembers how many restore / ready lines the log had before.
start() {
  restored0=$(restored); ready0=$(grep -c 'ringmq listening' "$work/broker.log" 2>/dev/null || true)
  "$ringmq" --listen "127.0.0.1:$port" --shards 2 --config "$work/ringmq.toml" --log-level info \
    >> "$work/broker.log" 2>&1 &
  pid=$!
}
restored() { grep -c 'state restored' "$work/broker.log" 2>/dev/null || true; }
# Until the broker started last logs "ringmq listening".
ready() { until [[ "$(grep -c 'ringmq listening' "$work/broker.log" 2>/dev/null || true)" -gt "${ready0:-0}" ]]; do sleep 0.02; done; }
sources="127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7"
fill() { "$bench" persist-fill -p "$port" --ifaddr "$sources" --prefix snap --sessions "$sessions" \
  --messages "$messages" --threads 32 "$@"; }

start; ready
fill --phases create,publish
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
start
until [[ "$(restored)" -ge $((restored0 + 2)) ]]; do sleep 0.01; done
# The snapshot's begin marker opens a new segment: wait for one (bounded), then DELAY more.
segments() { find "$work/store" -name '*.log' | wc -l; }
before=$(segments)
for _ in $(seq 1 3000); do [[ "$(segments)" -gt "$before" ]] && break; sleep 0.01; done
sleep "$delay"
kill -STOP "$pid"
cp -a "$work/store" "$work/image"
kill -9 "$pid"; kill -CONT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
echo "crash image taken ${delay}s after the restore (during the post-restore snapshot, if any)"
for d in "$work"/image/shard-*; do ls "$d"; done
sed -i "s|$work/store|$work/image|" "$work/ringmq.toml"
start; ready
grep -E 'torn tail|state restored' "$work/broker.log" | sed 's/.*Z //' | cut -c1-180
total=$(grep 'state restored' "$work/broker.log" | tail -2 | sed 's/.*queued=\([0-9]*\).*/\1/' | paste -sd+ | bc)
echo "queued after the second restart: $total of $messages acknowledged"
fill --phases verify --quiet-ms 2000
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
echo "log: $work/broker.log"
