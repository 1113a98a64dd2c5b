"""Subscribe with paho-mqtt, print SUBSCRIBED once the SUBACK is in, then one `MSG` line per
message as it arrives, until --count messages arrived (exit 0) or --timeout seconds passed
(exit 2, or 0 with --allow-fewer, for shared-subscription members that get only a share)."""

import argparse
import sys
import time

from mqtt_common import Conn, emit, fail, format_message

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--version", choices=["5", "311"], required=True)
parser.add_argument("--topic", required=True)
parser.add_argument("--qos", type=int, default=0)
parser.add_argument("--count", type=int, required=True)
parser.add_argument("--timeout", type=float, default=15.0)
parser.add_argument("--allow-fewer", action="store_true")
parser.add_argument("--id", default="")
parser.add_argument("--sub-id", type=int)
args = parser.parse_args()

conn = Conn(args.port, args.version, args.id or f"paho-sub-{args.topic}", timeout=args.timeout)
conn.on_msg = lambda msg: emit(format_message(msg))
conn.connect()
conn.subscribe(args.topic, args.qos, sub_id=args.sub_id)
emit("SUBSCRIBED")
deadline = time.monotonic() + args.timeout
while time.monotonic() < deadline:
    with conn.lock:
        if len(conn.messages) >= args.count:
            break
    time.sleep(0.02)
conn.close()
with conn.lock:
    n = len(conn.messages)
if n < args.count and not args.allow_fewer:
    fail(f"got {n} of {args.count} messages within {args.timeout} s")
if n > args.count:
    fail(f"got {n} messages, more than the {args.count} expected")
sys.exit(0)
