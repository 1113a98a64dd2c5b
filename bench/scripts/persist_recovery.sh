#!/usr/bin/env bash
# Recovery time and disk size of a large persistent data set (issue 14): SESSIONS persistent
# sessions (default 100 000), each subscribed QoS 1 to its own topic and disconnected, holding
# MESSAGES queued QoS 1 messages (default 1 000 000) in ringmq with [storage] fsync = "always".
# Then:
#   1. kill -9, restart: time from spawn until the listener accepts; du of the directory;
#   2. SIGTERM (graceful), restart: the same;
#   3. verify: every session resumes (Session Present 1) and receives each message once;
#   4. after the deliveries are acknowledged and the log compacted: du again.
# Sessions connect in waves of THREADS connections (each closes before its worker's next), from
# several 127.0.0.x source addresses, so the 20 000-descriptor limit and the ephemeral port
# range are no obstacle. Prints one line per step; the broker log stays in $WORK.
#
#   bench/scripts/persist_recovery.sh
#   SESSIONS=10000 MESSAGES=100000 bench/scripts/persist_recovery.sh
#
# Environment: SESSIONS, MESSAGES, SHARDS (nproc), THREADS (32), SIZE (payload bytes, 64),
# RINGMQ / RINGMQ_BENCH (target/release/…), WORK (a new temp dir).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
sessions="${SESSIONS:-100000}"
messages="${MESSAGES:-1000000}"
shards="${SHARDS:-$(nproc)}"
threads="${THREADS:-32}"
size="${SIZE:-64}"
ringmq="${RINGMQ:-$root/target/release/ringmq}"
bench="${RINGMQ_BENCH:-$root/target/release/ringmq-bench}"
work="${WORK:-$(mktemp -d -t ringmq-recovery-XXXXXX)}"
mkdir -p "$work"
ulimit -n "$(ulimit -Hn)" || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"; mport="$(free_port)"
cat > "$work/ringmq.toml" <<CONF
[metrics]
bind = "127.0.0.1:$mport"
[storage]
dir = "$work/store"
fsync = "always"
CONF

pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

# Starts the broker; sets ms to the milliseconds from spawn until it logs "ringmq listening"
# (every shard has recovered and listens: a TCP connect alone can succeed earlier, into the
# backlog of a shard that already listens while another still replays), and accept_ms to the
# first successful TCP connect.
start() {
  local t0; t0=$(date +%s%N)
  local before; before=$(grep -c 'ringmq listening' "$work/broker.log" 2>/dev/null || true)
  "$ringmq" --listen "127.0.0.1:$port" --shards "$shards" --config "$work/ringmq.toml" \
    --log-level info >> "$work/broker.log" 2>&1 &
  pid=$!
  accept_ms=""
  for _ in $(seq 1 30000); do
    if [[ -z "$accept_ms" ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      accept_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    fi
    if [[ "$(grep -c 'ringmq listening' "$work/broker.log")" -gt "${before:-0}" ]]; then
      ms=$(( ($(date +%s%N) - t0) / 1000000 )); return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "broker exited" >&2; tail -20 "$work/broker.log" >&2; return 1; }
    sleep 0.005
  done
  echo "not ready within 150 s" >&2; return 1
}
metric() { curl -s "http://127.0.0.1:$mport/metrics" | awk -v f="$1" '$1 ~ "^"f {s+=$2} END {printf "%d", s}'; }
rss() { awk '/VmRSS/ {print $2" kB"}' "/proc/$pid/status"; }
# Bytes of records in the segments (preallocated files are zero past the last record).
used() { python3 - "$work/store" <<'PY'
import os, sys
total = 0
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        if not f.endswith(".log"):
            continue
        with open(os.path.join(d, f), "rb") as fh:
            data = fh.read()
        total += len(data.rstrip(b"\0"))
print(total)
PY
}
disk() { du -sb "$work/store" | cut -f1; }
sources="127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7"
fill() { "$bench" persist-fill -p "$port" --ifaddr "$sources" --prefix rec --sessions "$sessions" \
  --messages "$messages" --threads "$threads" -s "$size" "$@"; }

echo "work: $work  sessions $sessions  messages $messages  payload $size B  shards $shards"
start; echo "empty start: ${ms} ms"
fill --phases create,publish
echo "after fill: records $(used) B, du $(disk) B, ringmq_storage_disk_bytes $(metric ringmq_storage_disk_bytes), snapshots $(metric ringmq_storage_snapshots_total), RSS $(rss)"
# Live data: what the sessions hold, topic + payload per queued message plus each session's id
# and subscription (the core's metadata comes on top).
topic_len=$(( ${#sessions} + 4 ))
echo "live payload+topic bytes: $(( messages * (size + topic_len) + sessions * (2 * (${#sessions} + 5)) ))"

kill -9 "$pid"; wait "$pid" 2>/dev/null || true
start; echo "restart after kill -9: ${ms} ms to ready (first TCP accept ${accept_ms} ms); records $(used) B, du $(disk) B; RSS $(rss)"
grep -E 'recover|replay|torn' "$work/broker.log" | tail -4 || true

kill -TERM "$pid"; t0=$(date +%s%N); wait "$pid" 2>/dev/null || true
echo "SIGTERM stop: $(( ($(date +%s%N) - t0) / 1000000 )) ms; du $(disk) B"
start; echo "restart after SIGTERM: ${ms} ms to ready (first TCP accept ${accept_ms} ms); du $(disk) B"

fill --phases verify
sleep 3
echo "after verify: records $(used) B, du $(disk) B, ringmq_storage_disk_bytes $(metric ringmq_storage_disk_bytes), snapshots $(metric ringmq_storage_snapshots_total)"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
start; echo "restart after delivery: ${ms} ms; records $(used) B, du $(disk) B, snapshots $(metric ringmq_storage_snapshots_total)"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
