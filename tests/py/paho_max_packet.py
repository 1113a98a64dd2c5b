"""A paho-mqtt (MQTT 5) client announcing a Maximum Packet Size, reporting whether the server's
CONNACK and PUBACK carry a Reason String.

Prints `CONNACK rc=<int> reason=<0|1>`; when the CONNACK is a success and --publish-to is
given, publishes one QoS 1 message there and prints `PUBACK rc=<int> reason=<0|1>`.
Exit 0 when every answer came, 2 on a timeout.
"""

import argparse
import threading

from mqtt_common import PacketTypes, Properties, emit, fail, mqtt

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--id", required=True)
parser.add_argument("--max-packet-size", type=int, default=0, help="0: not announced")
parser.add_argument("--publish-to", default=None, help="topic of one QoS 1 publish")
parser.add_argument("--timeout", type=float, default=10.0)
args = parser.parse_args()

connected = threading.Event()
published = threading.Event()
answers = {}


def has_reason(properties):
    return int(properties is not None and hasattr(properties, "ReasonString"))


def on_connect(client, userdata, flags, reason_code, properties):
    answers["connack"] = (reason_code.value, has_reason(properties))
    connected.set()


def on_publish(client, userdata, mid, reason_code, properties):
    answers["puback"] = (reason_code.value, has_reason(properties))
    published.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.id, protocol=mqtt.MQTTv5)
client.on_connect = on_connect
client.on_publish = on_publish
connect_props = Properties(PacketTypes.CONNECT)
if args.max_packet_size:
    connect_props.MaximumPacketSize = args.max_packet_size
client.connect("127.0.0.1", args.port, keepalive=30, clean_start=True, properties=connect_props)
client.loop_start()
if not connected.wait(args.timeout):
    fail("no CONNACK")
rc, reason = answers["connack"]
emit(f"CONNACK rc={rc} reason={reason}")
if rc == 0 and args.publish_to:
    client.publish(args.publish_to, b"x", qos=1)
    if not published.wait(args.timeout):
        fail("no PUBACK")
    rc, reason = answers["puback"]
    emit(f"PUBACK rc={rc} reason={reason}")
    client.disconnect()
client.loop_stop()
