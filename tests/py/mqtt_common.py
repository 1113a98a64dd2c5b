"""Shared helpers for the paho-mqtt scripts the Rust end-to-end tests launch.

Every script talks to 127.0.0.1 only, bounds every wait, and prints received messages as one
line each, `MSG key=value ...`, with byte values hex-encoded so the Rust side parses them
without a JSON dependency (see tests/src/tools.rs, `PyMsg`).
Exit codes: 0 success, 2 timeout or protocol failure, 3 paho-mqtt missing or too old.
"""

import sys
import threading

try:
    import paho.mqtt
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:  # pragma: no cover - environment problem, reported to the test
    print(f"paho-mqtt is not installed ({e}): pip install 'paho-mqtt>=2,<3'", file=sys.stderr)
    sys.exit(3)

if int(paho.mqtt.__version__.split(".")[0]) < 2:
    print(f"paho-mqtt {paho.mqtt.__version__} is too old: pip install 'paho-mqtt>=2,<3'", file=sys.stderr)
    sys.exit(3)


_print_lock = threading.Lock()


def emit(line):
    """Prints one whole line: the paho network thread and the main thread both print, and
    print() writes the text and the newline separately, so lines could interleave."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fail(what):
    print(f"FAIL: {what}", file=sys.stderr, flush=True)
    sys.exit(2)


def protocol(version):
    if version == "5":
        return mqtt.MQTTv5
    if version == "311":
        return mqtt.MQTTv311
    fail(f"unknown protocol version {version!r}")


def hexs(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return data.hex()


def format_message(msg):
    """One `MSG ...` line for a received message."""
    fields = [
        f"topic={hexs(msg.topic)}",
        f"payload={hexs(msg.payload)}",
        f"qos={msg.qos}",
        f"retain={int(bool(msg.retain))}",
    ]
    props = getattr(msg, "properties", None)
    if props is not None:
        for name, value in getattr(props, "UserProperty", []) or []:
            fields.append(f"up={hexs(name)}:{hexs(value)}")
        if hasattr(props, "ContentType"):
            fields.append(f"ct={hexs(props.ContentType)}")
        if hasattr(props, "ResponseTopic"):
            fields.append(f"rt={hexs(props.ResponseTopic)}")
        if hasattr(props, "CorrelationData"):
            fields.append(f"cd={hexs(props.CorrelationData)}")
        if hasattr(props, "MessageExpiryInterval"):
            fields.append(f"exp={props.MessageExpiryInterval}")
        if hasattr(props, "PayloadFormatIndicator"):
            fields.append(f"pfi={props.PayloadFormatIndicator}")
        sids = getattr(props, "SubscriptionIdentifier", None)
        if sids is not None:
            for sid in sids if isinstance(sids, list) else [sids]:
                fields.append(f"sid={sid}")
    return "MSG " + " ".join(fields)


class Conn:
    """A paho client with connect/subscribe/publish waits bounded by `timeout` seconds."""

    def __init__(self, port, version, client_id, timeout=10.0, clean=True):
        self.port = port
        self.version = version
        self.timeout = timeout
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.connect_rc = None
        self.suback_codes = None
        self.messages = []
        self.lock = threading.Lock()
        self.on_msg = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol(version),
            **({} if version == "5" else {"clean_session": clean}),
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_rc = reason_code
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.suback_codes = reason_codes
        self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append(msg)
        if self.on_msg is not None:
            self.on_msg(msg)

    def connect(self, will=None):
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        kwargs = {"clean_start": True} if self.version == "5" else {}
        self.client.connect("127.0.0.1", self.port, keepalive=30, **kwargs)
        self.client.loop_start()
        if not self.connected.wait(self.timeout):
            fail("no CONNACK")
        if self.connect_rc is None or self.connect_rc.is_failure:
            fail(f"CONNACK refused: {self.connect_rc}")
        return self

    def subscribe(self, topic, qos, sub_id=None):
        self.subscribed.clear()
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        if self.version == "5":
            self.client.subscribe(topic, options=mqtt.SubscribeOptions(qos=qos), properties=props)
        else:
            self.client.subscribe(topic, qos)
        if not self.subscribed.wait(self.timeout):
            fail(f"no SUBACK for {topic}")
        codes = [int(getattr(c, "value", c)) for c in self.suback_codes]
        if codes != [qos]:
            fail(f"SUBACK for {topic}: {codes}, expected [{qos}]")

    def publish(self, topic, payload, qos, retain=False, props=None):
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(self.timeout)
        if not info.is_published():
            fail(f"publish to {topic} (QoS {qos}) not completed")

    def wait_messages(self, count):
        """The first `count` messages, or a failure after the timeout."""
        done = threading.Event()
        deadline = threading.Timer(self.timeout, done.set)
        deadline.start()
        try:
            while not done.is_set():
                with self.lock:
                    if len(self.messages) >= count:
                        return list(self.messages[:count])
                done.wait(0.02)
        finally:
            deadline.cancel()
        with self.lock:
            got = [format_message(m) for m in self.messages]
        fail(f"got {len(got)} of {count} messages: {got}")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def publish_properties(args):
    """PUBLISH properties from the common command-line options (v5 only)."""
    props = Properties(PacketTypes.PUBLISH)
    any_set = False
    for pair in args.user_prop or []:
        name, _, value = pair.partition("=")
        props.UserProperty = (name, value)
        any_set = True
    if args.content_type is not None:
        props.ContentType = args.content_type
        any_set = True
    if args.response_topic is not None:
        props.ResponseTopic = args.response_topic
        any_set = True
    if args.correlation_hex is not None:
        props.CorrelationData = bytes.fromhex(args.correlation_hex)
        any_set = True
    if args.expiry is not None:
        props.MessageExpiryInterval = args.expiry
        any_set = True
    return props if any_set else None


def add_property_args(parser):
    parser.add_argument("--user-prop", action="append", help="name=value, repeatable")
    parser.add_argument("--content-type")
    parser.add_argument("--response-topic")
    parser.add_argument("--correlation-hex")
    parser.add_argument("--expiry", type=int)
