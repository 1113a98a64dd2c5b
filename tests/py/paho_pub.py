"""Publish one or more messages with paho-mqtt and wait until each QoS flow completed."""

import argparse

from mqtt_common import Conn, add_property_args, emit, publish_properties

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--version", choices=["5", "311"], required=True)
parser.add_argument("--topic", required=True)
parser.add_argument("--qos", type=int, default=0)
parser.add_argument("--retain", action="store_true")
parser.add_argument("--message", action="append", required=True, help="repeatable, sent in order")
parser.add_argument("--id", default="")
add_property_args(parser)
args = parser.parse_args()

conn = Conn(args.port, args.version, args.id or f"paho-pub-{args.topic}")
conn.connect()
props = publish_properties(args) if args.version == "5" else None
for m in args.message:
    conn.publish(args.topic, m.encode("utf-8"), args.qos, retain=args.retain, props=props)
conn.close()
emit("PUBLISHED")
