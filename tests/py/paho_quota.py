"""Quotas seen by paho-mqtt (MQTT 5): connect from a chosen local address and report the
CONNACK reason code, or publish as fast as paho can and report the server's DISCONNECT.

Prints `CONNACK rc=<int>` per connection attempt (with --attempts N: up to N, each a new
client, stopping at the first refusal) and, with --flood, `DISCONNECT rc=<int> sent=<n>`.
Exit 0 when what was asked happened, 2 on a timeout.
"""

import argparse
import threading

from mqtt_common import emit, fail, mqtt

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--bind", default="127.0.0.1", help="local address to connect from")
parser.add_argument("--id", required=True)
parser.add_argument("--attempts", type=int, default=1, help="connect until refused, at most N times")
parser.add_argument("--flood", type=int, default=0, help="QoS 0 messages to publish at once")
parser.add_argument("--size", type=int, default=10, help="payload bytes per message")
parser.add_argument("--timeout", type=float, default=10.0)
args = parser.parse_args()


class Attempt:
    def __init__(self, client_id):
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack = None
        self.disconnect = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self.on_connect
        self.client.on_disconnect = self.on_disconnect

    def on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code
        self.connected.set()

    def on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect = reason_code
        self.disconnected.set()

    def connect(self):
        self.client.connect(
            "127.0.0.1", args.port, keepalive=30, bind_address=args.bind, clean_start=True
        )
        self.client.loop_start()
        if not self.connected.wait(args.timeout):
            fail("no CONNACK")
        emit(f"CONNACK rc={self.connack.value}")
        return not self.connack.is_failure


for i in range(args.attempts):
    a = Attempt(args.id if args.attempts == 1 else f"{args.id}-{i}")
    ok = a.connect()
    if ok and args.flood:
        payload = b"x" * args.size
        sent = 0
        for _ in range(args.flood):
            if a.disconnected.is_set():
                break
            a.client.publish("quota/flood", payload, qos=0)
            sent += 1
        if not a.disconnected.wait(args.timeout):
            fail(f"still connected after publishing {sent} messages")
        emit(f"DISCONNECT rc={a.disconnect.value} sent={sent}")
    elif ok:
        a.client.disconnect()
    a.client.loop_stop()
    if not ok:
        break
