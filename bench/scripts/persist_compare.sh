#!/usr/bin/env bash
# Persistent-session QoS 1 side by side (issue 14): ringmq with [storage] fsync = "always",
# ringmq memory-only, and Mosquitto with `persistence true`, each on p2p (50 publishers → 50
# persistent subscribers) and fan-in (50 publishers → 1 persistent subscriber), every
# combination RUNS times (2: the machine is shared, numbers are noisy). The scenario is
# `ringmq-bench persist` (Clean Start 0 + Session Expiry, subscribers that go away and come
# back); for ringmq the storage counters are scraped from /metrics: fsyncs/s, records/fsync.
#
#   bench/scripts/persist_compare.sh                      # writes target/persist-compare/*.json
#   DURATION=5 RUNS=1 bench/scripts/persist_compare.sh    # quicker
#
# Environment: DURATION (10 s), RUNS (2), SHARDS (nproc), CLIENTS (50), QOS (1), OFFLINE_MS
# (500; 0: subscribers never leave), RINGMQ / RINGMQ_BENCH (target/release/…), MOSQUITTO,
# OUT (target/persist-compare). Brokers run under `nice`; each is stopped after its run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
duration="${DURATION:-10}"
runs="${RUNS:-2}"
shards="${SHARDS:-$(nproc)}"
clients="${CLIENTS:-50}"
qos="${QOS:-1}"
offline="${OFFLINE_MS:-500}"
ringmq="${RINGMQ:-$root/target/release/ringmq}"
bench="${RINGMQ_BENCH:-$root/target/release/ringmq-bench}"
mosquitto="${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
out="${OUT:-$root/target/persist-compare}"
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)" || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_accept() { # port, pid
  for _ in $(seq 1 500); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.02
  done
  return 1
}

pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

run_one() { # broker scenario run
  local broker="$1" scenario="$2" run="$3"
  local work; work="$(mktemp -d -t ringmq-persist-XXXXXX)"
  local port; port="$(free_port)"
  local mport=""; local extra=()
  case "$broker" in
    ringmq-fsync|ringmq-memory)
      mport="$(free_port)"
      {
        echo "[metrics]"; echo "bind = \"127.0.0.1:$mport\""
        echo "[limits]"; echo "max_queued_messages = 1000000"; echo "max_queued_bytes = 1000000000"
        if [[ "$broker" == ringmq-fsync ]]; then
          echo "[storage]"; echo "dir = \"$work/store\""; echo "fsync = \"always\""
        fi
      } > "$work/ringmq.toml"
      nice "$ringmq" --listen "127.0.0.1:$port" --shards "$shards" --config "$work/ringmq.toml" \
        --log-level warn > "$work/broker.log" 2>&1 &
      pid=$!
      extra=(--metrics "127.0.0.1:$mport")
      ;;
    mosquitto-persist)
      mkdir -p "$work/store"
      cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/store/
max_queued_messages 1000000
max_inflight_messages 1024
CONF
      nice "$mosquitto" -c "$work/mosquitto.conf" > "$work/broker.log" 2>&1 &
      pid=$!
      ;;
  esac
  if ! wait_accept "$port" "$pid"; then
    echo "$broker did not start:"; cat "$work/broker.log"; return 1
  fi
  local subs="$clients"; [[ "$scenario" == fan-in ]] && subs=1
  local json="$out/$broker-$scenario-qos$qos-$run.json"
  echo "== $broker $scenario run $run"
  "$bench" persist -p "$port" -c "$clients" --subscribers "$subs" -q "$qos" \
    --duration "$duration" --offline-ms "$offline" --broker-pid "$pid" \
    --json "$json" "${extra[@]}" || echo "!! run failed"
  if [[ -d "$work/store" ]]; then echo "  disk after: $(du -sb "$work/store" | cut -f1) B"; fi
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
  rm -rf "$work"
}

for run in $(seq 1 "$runs"); do
  for scenario in p2p fan-in; do
    for broker in ringmq-fsync ringmq-memory mosquitto-persist; do
      run_one "$broker" "$scenario" "$run"
    done
  done
done
echo "JSON reports in $out"
