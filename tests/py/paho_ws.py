"""paho-mqtt 2.x over WebSockets (transport="websockets"), MQTT 3.1.1 and 5: subscribe, then
publish a short and a 100 KB message at QoS 1 and check both arrive intact.

Usage: paho_ws.py HOST PORT [PATH]
"""
import sys, threading
import paho.mqtt.client as mqtt
host, port = sys.argv[1], int(sys.argv[2]); path = sys.argv[3] if len(sys.argv) > 3 else "/mqtt"
big = bytes(range(256)) * 400
for proto in (mqtt.MQTTv311, mqtt.MQTTv5):
    got, done, connected = [], threading.Event(), threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-ws-{proto}", transport="websockets", protocol=proto)
    c.ws_set_options(path=path)
    def on_connect(cl, ud, flags, rc, props=None):
        assert not rc.is_failure, rc; connected.set()
    def on_message(cl, ud, msg):
        got.append(msg.payload)
        if len(got) == 2: done.set()
    c.on_connect, c.on_message = on_connect, on_message
    c.connect(host, port, keepalive=30); c.loop_start()
    assert connected.wait(5), "no CONNACK"
    c.subscribe("ws/test", qos=1)
    import time; time.sleep(0.3)
    c.publish("ws/test", b"hello over websockets", qos=1); c.publish("ws/test", big, qos=1)
    assert done.wait(5), f"got {len(got)} messages"
    assert got == [b"hello over websockets", big], [len(g) for g in got]
    c.disconnect(); c.loop_stop(); print(f"ok: protocol {proto}")
