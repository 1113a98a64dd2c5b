"""ACL checks with paho-mqtt: connect with a user name (no password) and client id, subscribe to
each --sub filter (one SUBSCRIBE each) and print `SUBACK <filter> <code>`, then publish QoS 1 to
each --pub topic and print `PUBACK <topic> <code>` (v5 reason code; 3.1.1 has none: 0 once
acknowledged). Exit 0 when everything was answered, 2 otherwise."""

import argparse
import sys
import threading

try:
    import paho.mqtt.client as mqtt
except ImportError:
    print("paho-mqtt is not installed: pip install 'paho-mqtt>=2,<3'", file=sys.stderr)
    sys.exit(3)

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--version", choices=["5", "311"], required=True)
parser.add_argument("--id", required=True)
parser.add_argument("--user")
parser.add_argument("--sub", action="append", default=[])
parser.add_argument("--pub", action="append", default=[])
parser.add_argument("--timeout", type=float, default=10.0)
args = parser.parse_args()

v5 = args.version == "5"
client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id=args.id,
    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
)
if args.user is not None:
    client.username_pw_set(args.user)
lock = threading.Lock()
done = {}
events = {}
connected = threading.Event()
connect_rc = []


def on_connect(c, userdata, flags, reason_code, properties):
    connect_rc.append(reason_code)
    connected.set()


def on_subscribe(c, userdata, mid, reason_codes, properties):
    with lock:
        done[("sub", mid)] = reason_codes[0].value if reason_codes else -1
        events[("sub", mid)].set()


def on_publish(c, userdata, mid, reason_code, properties):
    with lock:
        done[("pub", mid)] = reason_code.value if reason_code is not None else 0
        ev = events.get(("pub", mid))
    if ev is not None:
        ev.set()


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_publish = on_publish
client.connect("127.0.0.1", args.port, keepalive=30)
client.loop_start()
if not connected.wait(args.timeout) or connect_rc[0].is_failure:
    print(f"CONNACK {connect_rc[0].value if connect_rc else 'none'}", flush=True)
    sys.exit(2)
print("CONNACK 0", flush=True)

for f in args.sub:
    with lock:
        rc, mid = client.subscribe(f, qos=1)
        events[("sub", mid)] = threading.Event()
        ev = events[("sub", mid)]
    if not ev.wait(args.timeout):
        print(f"no SUBACK for {f}", file=sys.stderr)
        sys.exit(2)
    print(f"SUBACK {f} {done[('sub', mid)]}", flush=True)

for t in args.pub:
    with lock:
        info = client.publish(t, b"acl", qos=1)
        events.setdefault(("pub", info.mid), threading.Event())
        ev = events[("pub", info.mid)]
        if ("pub", info.mid) in done:
            ev.set()
    if not ev.wait(args.timeout):
        print(f"no PUBACK for {t}", file=sys.stderr)
        sys.exit(2)
    print(f"PUBACK {t} {done[('pub', info.mid)]}", flush=True)

client.disconnect()
client.loop_stop()
sys.exit(0)
