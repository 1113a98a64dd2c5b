"""paho-mqtt 2.x, MQTT 5 enhanced authentication with a JWT: prints the CONNACK reason code
and, when connected, the PUBACK reason code of a QoS 1 publish to each given topic.

Usage: paho_jwt.py PORT METHOD TOKEN [TOPIC ...]
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

port, method, token, topics = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
connected = threading.Event()
acks = {}
acked = threading.Event()
result = {}


def on_connect(client, userdata, flags, reason_code, properties):
    result["connack"] = reason_code.value
    connected.set()


def on_publish(client, userdata, mid, reason_code, properties):
    acks[mid] = reason_code.value
    if len(acks) == len(topics):
        acked.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-jwt", protocol=mqtt.MQTTv5)
client.on_connect = on_connect
client.on_publish = on_publish
props = Properties(PacketTypes.CONNECT)
props.AuthenticationMethod = method
props.AuthenticationData = token.encode()
client.connect("127.0.0.1", port, keepalive=30, properties=props)
client.loop_start()
if not connected.wait(10):
    print("NO-CONNACK")
    sys.exit(1)
print(f"CONNACK {result['connack']}", flush=True)
if result["connack"] == 0:
    mids = [client.publish(t, b"x", qos=1).mid for t in topics]
    if topics and not acked.wait(10):
        print("NO-PUBACK")
        sys.exit(1)
    for t, mid in zip(topics, mids):
        print(f"PUBACK {t} {acks[mid]}", flush=True)
    client.disconnect()
client.loop_stop()
