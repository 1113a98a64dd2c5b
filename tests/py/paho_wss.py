"""paho-mqtt 2.x, MQTT 5 over WebSockets over TLS (transport="websockets", tls_set), and a
plain-ssl probe of the server certificate. Talks to 127.0.0.1 only; every wait is bounded.

Usage:
  paho_wss.py roundtrip PORT CA [--cert C --key K] [--jwt METHOD TOKEN] [--sub FILTER]
                        [--pub TOPIC ...]
      Connects and prints `CONNACK <code>`; if accepted, subscribes to FILTER (prints
      `SUBACK <code>`), publishes b"wss-<i>" at QoS 1 to each TOPIC (prints
      `PUBACK <topic> <code>`), then prints `MSG <topic> <payload>` for every message received
      within the wait. A refused TLS or WebSocket handshake prints `REFUSED <error>`.
  paho_wss.py hold PORT CA TOPIC
      Connects and subscribes to TOPIC, prints `READY`; then for each line on stdin publishes
      to TOPIC at QoS 1 and prints `ECHO <payload>` when the message comes back.
  paho_wss.py peer PORT CA
      A TLS handshake (no WebSocket, no MQTT) verified against CA for 127.0.0.1; prints
      `PEER <hex of the server certificate's DER>`.
"""
import ssl
import socket
import sys
import threading

from mqtt_common import fail, mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10.0


def client(port, ca, client_id, cert=None, key=None):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    transport="websockets", protocol=mqtt.MQTTv5)
    c.ws_set_options(path="/mqtt")
    c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    return c


def print_line(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def roundtrip(args):
    port, ca = int(args[0]), args[1]
    cert = key = method = token = sub = None
    topics = []
    rest = args[2:]
    while rest:
        opt = rest.pop(0)
        if opt == "--cert":
            cert = rest.pop(0)
        elif opt == "--key":
            key = rest.pop(0)
        elif opt == "--jwt":
            method, token = rest.pop(0), rest.pop(0)
        elif opt == "--sub":
            sub = rest.pop(0)
        elif opt == "--pub":
            topics.append(rest.pop(0))
        else:
            fail(f"unknown option {opt}")
    c = client(port, ca, "paho-wss", cert, key)
    connected, subscribed, acked, closed = (threading.Event() for _ in range(4))
    result, acks, got = {}, {}, []

    def on_connect(cl, ud, flags, rc, props):
        result["connack"] = rc.value
        connected.set()

    def on_subscribe(cl, ud, mid, codes, props):
        result["suback"] = codes[0].value
        subscribed.set()

    def on_publish(cl, ud, mid, rc, props):
        acks[mid] = rc.value
        if len(acks) == len(topics):
            acked.set()

    def on_message(cl, ud, msg):
        got.append(msg)

    def on_disconnect(cl, ud, flags, rc, props):
        closed.set()

    c.on_connect, c.on_subscribe, c.on_publish = on_connect, on_subscribe, on_publish
    c.on_message, c.on_disconnect = on_message, on_disconnect
    props = None
    if method is not None:
        props = Properties(PacketTypes.CONNECT)
        props.AuthenticationMethod = method
        props.AuthenticationData = token.encode()
    try:
        c.connect("127.0.0.1", port, keepalive=30, properties=props)
    except Exception as e:  # the TLS or WebSocket handshake was refused
        print_line(f"REFUSED {type(e).__name__}: {e}")
        return
    c.loop_start()
    # A handshake refused after connect() returned (TLS 1.3 checks the client certificate
    # after the client finished) ends the connection without CONNACK.
    for _ in range(int(WAIT / 0.05)):
        if connected.is_set() or closed.is_set():
            break
        connected.wait(0.05)
    if not connected.is_set():
        print_line("REFUSED no CONNACK, connection closed" if closed.is_set() else "NO-CONNACK")
        c.loop_stop()
        return
    print_line(f"CONNACK {result['connack']}")
    if result["connack"] != 0:
        c.loop_stop()
        return
    if sub is not None:
        c.subscribe(sub, qos=1)
        if not subscribed.wait(WAIT):
            fail("no SUBACK")
        print_line(f"SUBACK {result['suback']}")
    mids = [c.publish(t, f"wss-{i}".encode(), qos=1).mid for i, t in enumerate(topics)]
    if topics and not acked.wait(WAIT):
        fail(f"PUBACKs: {acks}")
    for t, mid in zip(topics, mids):
        print_line(f"PUBACK {t} {acks[mid]}")
    if sub is not None:
        expected = sum(1 for a in acks.values() if a == 0)
        for _ in range(int(WAIT / 0.05)):
            if len(got) >= expected:
                break
            threading.Event().wait(0.05)
        for m in got:
            print_line(f"MSG {m.topic} {m.payload.decode()}")
    c.disconnect()
    c.loop_stop()


def hold(args):
    port, ca, topic = int(args[0]), args[1], args[2]
    c = client(port, ca, "paho-wss-hold")
    connected, subscribed, echoed = (threading.Event() for _ in range(3))
    got = []
    c.on_connect = lambda cl, ud, flags, rc, props: connected.set()
    c.on_subscribe = lambda cl, ud, mid, codes, props: subscribed.set()

    def on_message(cl, ud, msg):
        got.append(msg.payload)
        echoed.set()

    c.on_message = on_message
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    if not connected.wait(WAIT):
        fail("no CONNACK")
    c.subscribe(topic, qos=1)
    if not subscribed.wait(WAIT):
        fail("no SUBACK")
    print_line("READY")
    # One publish per line on stdin; the test kills this process when it gives up.
    for _ in sys.stdin:
        if not c.is_connected():
            fail("the connection ended while held")
        echoed.clear()
        c.publish(topic, b"still-here", qos=1)
        if not echoed.wait(WAIT):
            fail("the message did not come back")
        print_line(f"ECHO {got.pop().decode()}")
    c.disconnect()
    c.loop_stop()


def peer(args):
    port, ca = int(args[0]), args[1]
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            print_line(f"PEER {s.getpeercert(binary_form=True).hex()}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        fail(__doc__)
    command, rest = sys.argv[1], sys.argv[2:]
    {"roundtrip": roundtrip, "hold": hold, "peer": peer}.get(command, lambda _: fail(__doc__))(rest)
