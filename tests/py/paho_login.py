"""Connect with paho-mqtt using a user name and password; print `CONNACK rc=<code>`.

With --publish TOPIC, also publish one QoS 1 message and print `PUBLISHED` when acknowledged.
"""

import argparse
import threading

from mqtt_common import emit, fail, mqtt, protocol

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--version", choices=["5", "311"], required=True)
parser.add_argument("--id", required=True)
parser.add_argument("--user", required=True)
parser.add_argument("--password", required=True)
parser.add_argument("--publish")
args = parser.parse_args()

done = threading.Event()
result = {}


def on_connect(client, userdata, flags, reason_code, properties):
    result["rc"] = reason_code
    done.set()


def on_disconnect(client, userdata, flags, reason_code, properties):
    result.setdefault("rc", reason_code)
    done.set()


kwargs = {} if args.version == "5" else {"clean_session": True}
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.id,
                protocol=protocol(args.version), **kwargs)
c.username_pw_set(args.user, args.password)
c.on_connect = on_connect
c.on_disconnect = on_disconnect
c.connect("127.0.0.1", args.port, keepalive=30)
c.loop_start()
if not done.wait(15):
    fail("no CONNACK")
rc = result["rc"]
emit(f"CONNACK rc={rc.value} name={rc.getName().replace(' ', '_')}")
if args.publish and not rc.is_failure:
    info = c.publish(args.publish, b"hello", qos=1)
    info.wait_for_publish(10)
    emit("PUBLISHED")
c.disconnect()
c.loop_stop()
