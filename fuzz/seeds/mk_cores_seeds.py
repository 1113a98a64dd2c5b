# Regenerate: python3 fuzz/seeds/mk_cores_seeds.py fuzz/seeds/cores
# Builds fuzz/seeds/cores: byte programs for the `cores` target's operation decoder.
import os, sys
out = sys.argv[1]
TOPICS = ["a", "a/b", "a/c", "b/x", "c/d", "a/b/c"]
FILTERS = ["a/#","a/+","a/b","+/x","#","b/x","c/d","$share/g/a/#","$share/g/+/x","+/+","a","$share/h/#"]
IDS = ["a","b","c","d",""]
class P:
    def __init__(s, shards): s.b=[shards-2]
    def open(s, shard): s.b += [0, shard]
    def connect(s, c, cid, v5=True, clean=True, expiry=0, rm=0, mps=0, tam=0, ka=2, will=None):
        flags = (1 if clean else 0) | (0x20 if will else 0)
        s.b += [2, c, IDS.index(cid), 1 if v5 else 0, flags, expiry, rm, mps, tam]
        if will: s.b += [will[0], 0, TOPICS.index(will[1]), will[2]]
        s.b += [ka, 0]
    def sub(s, c, filt, qos=1, opts=0):
        s.b += [4, c, 0, qos | opts, FILTERS.index(filt), 1, 0]
    def pub(s, c, topic, qos=1, retain=False, extra=3, expiry=0, alias=0, split=None):
        s.b += [7, c, TOPICS.index(topic), qos | (4 if retain else 0), extra, expiry, alias, 0 if split is None else 0xC0|split]
    def ack(s, c, pick=0, fail=False): s.b += [11, c, pick | (0x80 if fail else 0)]
    def drain(s, c): s.b += [17, c]
    def pump(s): s.b += [22, 4]
    def flush(s): s.b += [22, 1]
    def reload(s, reg): s.b += [22, 0, 1 if reg else 0]
    def advance(s, i): s.b += [20, i]
    def disconnect(s, c, b=0): s.b += [14, c, b]
    def ping(s, c): s.b += [13, c]
    def close(s, c): s.b += [19, c]
    def release(s, c, closed_bit=1): s.b += [23, c, closed_bit]
    def raw(s, c, data): s.b += [16, c, len(data)] + list(data) + [0]
    def save(s, name):
        open(os.path.join(out, name), "wb").write(bytes(s.b))

# 1. Pub/sub across two shards, QoS 1, acks.
p = P(2); p.open(0); p.open(1)
p.connect(0, "a"); p.connect(1, "b"); p.pump(); p.drain(0); p.drain(1)
p.sub(0, "a/#", 1); p.pump(); p.drain(0)
p.pump(); p.pub(1, "a/b", 1); p.pub(1, "a/c", 2); p.pump(); p.drain(1); p.drain(0)
p.ack(0); p.ack(0); p.ack(1); p.pump(); p.drain(0); p.drain(1)
p.save("pubsub_two_shards")

# 2. Persistent session: subscribe, go away, messages queue, come back on another shard.
p = P(3); p.open(0); p.open(1)
p.connect(0, "c", clean=True, expiry=3); p.connect(1, "d"); p.pump(); p.drain(0); p.drain(1)
p.sub(0, "+/x", 2); p.pump(); p.drain(0)
p.disconnect(0); p.pump()
for _ in range(5): p.pub(0, "b/x", 1)  # client 1 is now the first live one
p.pump(); p.drain(0)
p.open(2); p.connect(1, "c", clean=False, expiry=3); p.pump(); p.drain(1)
p.ack(1); p.ack(1); p.pump(); p.drain(1); p.ack(1); p.pump(); p.drain(1)
p.save("session_resume_other_shard")

# 3. Retained messages, shared subscription, registry reload.
p = P(2); p.open(0); p.open(1); p.open(0)
p.connect(0, "a"); p.connect(1, "b", v5=False); p.connect(2, "c"); p.pump()
for c in range(3): p.drain(c)
p.pub(0, "a/b", 1, retain=True); p.pump(); p.drain(0)
p.sub(1, "$share/g/a/#", 1); p.sub(2, "$share/g/a/#", 1); p.sub(2, "a/+", 0); p.pump()
p.drain(1); p.drain(2)
p.reload(True); p.pub(0, "c/d", 1); p.pub(0, "a/c", 2); p.pump()
for c in range(3): p.drain(c)
p.reload(False); p.pump()
p.save("retained_shared_reload")

# 4. Slow reader with a small window, split writes, keep alive expiry.
p = P(2); p.open(0); p.open(1)
p.connect(0, "a", rm=1, tam=2); p.connect(1, "b", ka=1, will=(1, "a/c", 2)); p.pump(); p.drain(0); p.drain(1)
p.sub(0, "#", 2); p.pump(); p.drain(0)
for i in range(6): p.pub(1, "a/b", i % 3, alias=1 if i == 0 else 2, split=3 if i == 2 else None)
p.flush(); p.pump(); p.advance(5); p.pump(); p.drain(0); p.ack(0); p.drain(0); p.ack(0)
p.advance(6); p.pump(); p.drain(0); p.ping(0); p.drain(0)
p.save("slow_reader_keepalive_will")

# 5. Takeover while a claim is in flight, raw garbage, close and release.
p = P(3); p.open(0); p.open(1); p.open(2)
p.connect(0, "a", clean=False, expiry=3); p.connect(1, "a", clean=False, expiry=3)
p.b += [21, 1, 1]  # partial inbox on shard 1
p.connect(2, "a", clean=True); p.pump()
for c in range(3): p.drain(c)
p.raw(2, b"\x30\x05\x00\x01a\x00\x00\xe0\x00")
p.close(0); p.release(0); p.pump(); p.drain(0)
p.save("takeover_raw_close")
