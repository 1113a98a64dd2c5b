"""An Event Grid-style authentication webhook for the tests (tests/tests/webhook.rs).

HTTPS (--cert/--key) or plain HTTP; checks `Authorization: Bearer <--token>` (401 otherwise)
and answers from the request's userName (or, with an authentication method, its data):

  allow-a    allow, name "dev-a", attributes group=a, floor=3 (int), tags=[x, y], bad=1.5
  allow-b    allow, name "dev-b", attributes group=b
  deny       deny, errorReason "revoked by test"
  slow       sleeps --slow-secs, then allows as "dev-slow"
  status500  HTTP 500
  malformed  200 with a body that is not JSON
  noname     allow without clientAuthenticationName
  short      allow as "dev-short", expiring in --short-secs
  (auth data "tok-short"  allow as "dev-reauth", expiring in --short-secs;
   auth data "tok-long"   allow as "dev-reauth", expiring in an hour)

Prints `READY <port>` once listening, `REQ <userName or auth data>` per request and
`DONE slow` once the slow answer is written, flushed.
"""

import argparse
import base64
import http.server
import json
import ssl
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--token", required=True)
parser.add_argument("--slow-secs", type=float, default=3.0)
parser.add_argument("--short-secs", type=int, default=2)
args = parser.parse_args()

lock = threading.Lock()


def emit(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.headers.get("Authorization") != f"Bearer {args.token}":
            emit("REQ unauthorized")
            return self.answer(401, {"error": "bad bearer token"})
        try:
            req = json.loads(raw)
        except ValueError:
            return self.answer(400, {"error": "bad json"})
        key = req.get("userName")
        if key is None and "authenticationData" in req:
            key = base64.b64decode(req["authenticationData"]).decode()
        emit(f"REQ {key}")
        now = int(time.time())
        if key == "allow-a":
            if base64.b64decode(req.get("password", "")) != b"pw":
                return self.answer(200, {"decision": "deny", "errorReason": "bad password"})
            return self.answer(200, {
                "decision": "allow",
                "clientAuthenticationName": "dev-a",
                "attributes": {"group": "a", "floor": 3, "tags": ["x", "y"], "bad": 1.5},
            })
        if key == "allow-b":
            return self.answer(200, {"decision": "allow", "clientAuthenticationName": "dev-b",
                                     "attributes": {"group": "b"}})
        if key == "deny":
            return self.answer(200, {"decision": "deny", "errorReason": "revoked by test"})
        if key == "slow":
            time.sleep(args.slow_secs)
            self.answer(200, {"decision": "allow", "clientAuthenticationName": "dev-slow"})
            emit("DONE slow")
            return None
        if key == "status500":
            return self.answer(500, {"error": "boom"})
        if key == "malformed":
            return self.answer(200, b"this is not json")
        if key == "noname":
            return self.answer(200, {"decision": "allow"})
        if key == "short":
            return self.answer(200, {"decision": "allow", "clientAuthenticationName": "dev-short",
                                     "expiration": now + args.short_secs})
        if key == "tok-short":
            return self.answer(200, {"decision": "allow", "clientAuthenticationName": "dev-reauth",
                                     "expiration": now + args.short_secs})
        if key == "tok-long":
            return self.answer(200, {"decision": "allow", "clientAuthenticationName": "dev-reauth",
                                     "expiration": now + 3600})
        return self.answer(200, {"decision": "deny", "errorReason": f"unknown {key}"})


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if args.cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
emit(f"READY {server.server_address[1]}")
server.serve_forever()
