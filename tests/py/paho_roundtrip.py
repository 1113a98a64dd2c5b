"""One paho client subscribes at QoS 2, another publishes at QoS 0, 1 and 2; the subscriber must
receive each message with QoS min(published, 2), in order. Prints the received `MSG` lines."""

import argparse

from mqtt_common import Conn, emit, fail, format_message

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--version", choices=["5", "311"], required=True)
parser.add_argument("--topic", required=True)
args = parser.parse_args()

sub = Conn(args.port, args.version, f"paho-rt-sub-{args.version}").connect()
sub.subscribe(args.topic, 2)
pub = Conn(args.port, args.version, f"paho-rt-pub-{args.version}").connect()
for qos in (0, 1, 2):
    pub.publish(args.topic, f"qos{qos}".encode(), qos)
for msg in sub.wait_messages(3):
    emit(format_message(msg))
pub.close()
sub.close()
