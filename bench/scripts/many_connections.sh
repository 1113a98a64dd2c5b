#!/usr/bin/env bash
# Opens TOTAL idle MQTT connections to one ringmq from this machine, as several ringmq-bench
# processes each binding its own source addresses (127.0.0.x), holds them for HOLD seconds,
# and prints what it reached: connections, connect rate, broker RSS before / after / per
# connection, descriptors in use. The recipe behind it is in docs/benchmarks.md, "Load-testing
# 100 000 connections on one machine".
#
#   bench/scripts/many_connections.sh                          # 100 000 (needs the sysctls)
#   TOTAL=19000 PER_PROCESS=9500 bench/scripts/many_connections.sh   # a 20 000-descriptor box
#
# Environment: TOTAL (100000), PER_PROCESS (connections per load generator, 20000), HOLD (30 s),
# SHARDS (nproc), PORT (21883), RINGMQ / RINGMQ_BENCH (target/release/…), SOURCES_PER_PROCESS
# (source addresses per generator, 2: 127.0.0.2-3 for the first, 4-5 for the second, …).
# Everything runs under `nice`; the broker and the generators are stopped at the end.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
total="${TOTAL:-100000}"
per_process="${PER_PROCESS:-20000}"
hold="${HOLD:-30}"
shards="${SHARDS:-$(nproc)}"
port="${PORT:-21883}"
sources_per="${SOURCES_PER_PROCESS:-2}"
ringmq="${RINGMQ:-$root/target/release/ringmq}"
bench="${RINGMQ_BENCH:-$root/target/release/ringmq-bench}"
work="$(mktemp -d -t ringmq-many-XXXXXX)"

# One descriptor per connection, plus a few dozen for the process itself.
need_fds=$((per_process + 64))
broker_fds=$((total + 256))
hard="$(ulimit -Hn)"
if ((hard < need_fds)); then
  echo "ulimit -Hn is $hard: PER_PROCESS=$per_process needs $need_fds descriptors per generator" >&2
  exit 1
fi
if ((hard < broker_fds)); then
  echo "ulimit -Hn is $hard: the broker needs $broker_fds for TOTAL=$total (lower TOTAL or raise LimitNOFILE / fs.nr_open)" >&2
  exit 1
fi
range=($(cat /proc/sys/net/ipv4/ip_local_port_range))
ports=$((range[1] - range[0] + 1))
if ((per_process / sources_per >= ports)); then
  echo "ip_local_port_range gives $ports ports per source address: raise SOURCES_PER_PROCESS or the range" >&2
  exit 1
fi
echo "somaxconn $(cat /proc/sys/net/core/somaxconn), file-max $(cat /proc/sys/fs/file-max), port range ${range[*]}, ulimit -n $hard" >&2

cat > "$work/ringmq.toml" <<EOF
[server]
shards = $shards
[[listener]]
bind = "127.0.0.1:$port"
[limits]
max_connections = $((total + 1000))
EOF
(ulimit -n "$broker_fds" && exec nice -n 5 "$ringmq" --config "$work/ringmq.toml" --log-level warn) \
  > "$work/broker.log" 2>&1 &
broker=$!
cleanup() {
  kill "$broker" 2>/dev/null || true
  wait "$broker" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
  (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$broker/status"; }
rss_before=$(rss_kib)

processes=$(((total + per_process - 1) / per_process))
started=$(date +%s.%N)
pids=()
for ((p = 0; p < processes; p++)); do
  n=$((total - p * per_process < per_process ? total - p * per_process : per_process))
  ifaddr=""
  for ((s = 0; s < sources_per; s++)); do
    ifaddr+="${ifaddr:+,}127.0.0.$((2 + p * sources_per + s))"
  done
  (ulimit -n "$need_fds" && exec nice -n 5 "$bench" conn -p "$port" -c "$n" --ifaddr "$ifaddr" \
    --client-id "many$p-%i" -k 300 --threads 1 --connect-concurrency 64 \
    --duration "$hold" --quiet --json "$work/gen-$p.json") > "$work/gen-$p.log" 2>&1 &
  pids+=($!)
done
# Sample the broker while the generators hold their connections.
peak=0
rss_peak=0
deadline=$(($(date +%s) + hold + 120))
while (($(date +%s) < deadline)); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  ((alive)) || break
  fds=$(ls "/proc/$broker/fd" | wc -l)
  rss=$(rss_kib)
  ((fds > peak)) && peak=$fds
  ((rss > rss_peak)) && rss_peak=$rss
  sleep 1
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
ended=$(date +%s.%N)

python3 - "$work" "$processes" "$rss_before" "$rss_peak" "$peak" "$started" "$ended" <<'EOF'
import json, sys
work, processes, before, peak_rss, peak_fds, t0, t1 = sys.argv[1:]
ok = failed = 0
rates = []
slowest = 0.0
for p in range(int(processes)):
    try:
        r = json.load(open(f"{work}/gen-{p}.json"))
    except OSError:
        print(f"generator {p}: no report (see {work}/gen-{p}.log)")
        continue
    c = r["connections"]
    ok += c["ok"]; failed += c["failed"]
    rates.append(c["per_sec"])
    slowest = max(slowest, c["elapsed_secs"])
    print(f"generator {p}: {c['ok']} ok, {c['failed']} failed in {c['elapsed_secs']:.1f} s "
          f"({c['per_sec']:.0f}/s) from {', '.join(r.get('source_addresses', []))}")
before, peak_rss = int(before), int(peak_rss)
print(f"connections: {ok} ok, {failed} failed; connect rate: {ok / max(slowest, 1e-9):.0f}/s "
      f"(all of them over the slowest generator's {slowest:.1f} s)")
print(f"broker descriptors at peak: {peak_fds}")
print(f"broker RSS: {before / 1024:.1f} MiB before, {peak_rss / 1024:.1f} MiB at peak, "
      f"{(peak_rss - before) * 1024 / max(ok, 1):.0f} bytes per connection")
EOF
echo "logs and reports: $work" >&2
