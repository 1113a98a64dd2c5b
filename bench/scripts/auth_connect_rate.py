#!/usr/bin/env python3
"""Connects/s through the real ringmq binary with authentication, cold vs cached.

Cold: every CONNECT presents credentials the broker has not verified yet (a new client
certificate, a new token). Cached: the same credentials again, so the broker's per-shard
verification cache answers. Sequential CONNECT -> CONNACK -> DISCONNECT on loopback from one
Python process, so the absolute rate includes this client's own cost (TLS handshakes above
all); the difference between the columns is the broker's verification work.

Usage: bench/scripts/auth_connect_rate.py target/release/ringmq [--n 300]
Needs: openssl, python3 (standard library only).
"""
import argparse, base64, hashlib, hmac, json, os, socket, ssl, struct, subprocess, sys, tempfile, time

def sh(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def mqtt_str(b):
    return struct.pack(">H", len(b)) + b

def varint(n):
    out = bytearray()
    while True:
        d, n = n % 128, n // 128
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)

def connect_packet(client_id, method=None, data=None, password=None, username=None):
    props = b""
    if method:
        props += b"\x15" + mqtt_str(method.encode()) + b"\x16" + mqtt_str(data)
    flags = 0x02
    payload = mqtt_str(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += mqtt_str(username.encode())
    if password is not None:
        flags |= 0x40
        payload += mqtt_str(password)
    vh = mqtt_str(b"MQTT") + bytes([5, flags]) + struct.pack(">H", 30) + varint(len(props)) + props
    body = vh + payload
    return bytes([0x10]) + varint(len(body)) + body

def exchange(sock, packet):
    sock.sendall(packet)
    head = sock.recv(2)
    if len(head) < 2 or head[0] != 0x20:
        raise RuntimeError(f"no CONNACK: {head!r}")
    rest = sock.recv(head[1])
    if rest[1] != 0:
        raise RuntimeError(f"refused: reason 0x{rest[1]:02x}")
    sock.sendall(b"\xe0\x00")

def rate(n, one):
    t0 = time.perf_counter()
    for i in range(n):
        one(i)
    return n / (time.perf_counter() - t0)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("broker")
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="ringmq-authrate-")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rate-ca", cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    with open(os.path.join(d, "cl.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    sh("openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    sh("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    # Client certificates: one per cold CONNECT, all for the registered name dev (username).
    n_certs = args.n
    for i in range(n_certs):
        sh("openssl", "req", *ec, "-keyout", f"c{i}.key", "-out", f"c{i}.csr", "-subj", "/CN=dev", cwd=d)
        sh("openssl", "x509", "-req", "-in", f"c{i}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"c{i}.pem", "-days", "2", "-extfile", "cl.ext", cwd=d)
    # Token keys: HS256 secret, RSA and EC key pairs (public keys registered).
    secret = b"rate-secret-0123456789abcdef0123"
    sh("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.key", cwd=d)
    sh("openssl", "pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub", cwd=d)
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.key", cwd=d)
    sh("openssl", "pkey", "-in", "ec.key", "-pubout", "-out", "ec.pub", cwd=d)
    registry = {
        "namespace": {"clientAuthentication": {"customJwtAuthentication": {
            "tokenIssuer": "rate", "hmacSecrets": [secret.decode()],
            "issuerCertificates": [open(os.path.join(d, "rsa.pub")).read(), open(os.path.join(d, "ec.pub")).read()]}},
            "maxClientSessionsPerAuthenticationName": 100},
        "caCertificates": [{"name": "ca", "encodedCertificate": open(os.path.join(d, "ca.pem")).read()}],
        "clients": [{"name": "dev", "authenticationName": "dev",
                     "clientCertificateAuthentication": {"validationScheme": "SubjectMatchesAuthenticationName"}}],
        "clientGroups": [], "topicSpaces": [], "permissionBindings": []}
    json.dump(registry, open(os.path.join(d, "registry.json"), "w"))
    plain, tls_port = 18850 + os.getpid() % 50 * 2, 18851 + os.getpid() % 50 * 2
    with open(os.path.join(d, "ringmq.toml"), "w") as f:
        f.write(f'[server]\nshards = 1\n[[listener]]\nbind = "127.0.0.1:{plain}"\n'
                f'[[listener]]\nbind = "127.0.0.1:{tls_port}"\nprotocol = "mqtts"\ncert = "server.pem"\nkey = "server.key"\n'
                f'client_certificate = "required"\n[auth]\nregistry = "registry.json"\n')
    broker = subprocess.Popen([os.path.abspath(args.broker), "--config", os.path.join(d, "ringmq.toml"), "--log-level", "error"], cwd=d)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", plain)).close(); break
            except OSError:
                time.sleep(0.05)

        def sign(alg, claims):
            header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
            body = b64url(json.dumps(claims).encode())
            msg = f"{header}.{body}".encode()
            if alg == "HS256":
                sig = hmac.new(secret, msg, hashlib.sha256).digest()
            else:
                key = "rsa.key" if alg == "RS256" else "ec.key"
                der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=msg, cwd=d, capture_output=True, check=True).stdout
                sig = der if alg == "RS256" else ecdsa_der_to_raw(der)
            return f"{header}.{body}.{b64url(sig)}".encode()

        results = []
        exp = int(time.time()) + 3600
        for alg in ["HS256", "RS256", "ES256"]:
            tokens = [sign(alg, {"iss": "rate", "sub": f"dev", "exp": exp, "jti": i}) for i in range(args.n)]
            def jwt_one(i, toks=tokens):
                with socket.create_connection(("127.0.0.1", plain)) as s:
                    exchange(s, connect_packet("rate", "CUSTOM-JWT", toks[i]))
            cold = rate(args.n, jwt_one)
            cached = rate(args.n, lambda i, toks=tokens: jwt_one(0, toks))
            results.append((f"JWT {alg} (CUSTOM-JWT)", cold, cached))

        def tls_ctx(i):
            ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
            ctx.load_cert_chain(os.path.join(d, f"c{i}.pem"), os.path.join(d, f"c{i}.key"))
            return ctx
        ctxs = [tls_ctx(i) for i in range(n_certs)]
        def tls_one(i):
            with socket.create_connection(("127.0.0.1", tls_port)) as raw:
                with ctxs[i].wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    exchange(s, connect_packet("rate", username="dev"))
        cold = rate(n_certs, tls_one)
        cached = rate(n_certs, lambda i: tls_one(0))
        results.append(("X.509 mutual TLS (ECDSA P-256)", cold, cached))
        # Baseline: plain TCP without credentials is refused on a registry broker, so the
        # TLS handshake alone is measured by the column difference only.
        print(f"\n{args.n} sequential CONNECTs each, one shard, one Python client on loopback\n")
        print(f"| credentials | cold connects/s | cached connects/s |")
        print(f"|---|---|---|")
        for name, c, k in results:
            print(f"| {name} | {c:,.0f} | {k:,.0f} |")
    finally:
        broker.terminate()
        broker.wait(timeout=20)

def ecdsa_der_to_raw(der):
    # SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        ln = der[i + 1]
        v = der[i + 2:i + 2 + ln].lstrip(b"\x00")
        out += v.rjust(32, b"\x00")
        i += 2 + ln
    return out

if __name__ == "__main__":
    main()
