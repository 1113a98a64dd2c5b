#!/usr/bin/env bash
# Checks deploy/Dockerfile's runtime stage on a machine that has podman but reaches no image
# registry (the project's machines reach only package registries; docs/deploy.md, "How the
# image was checked"):
#
# 1. a debian:bookworm-slim base image made with debootstrap from Debian's mirror, imported
#    into podman under the name the Dockerfile asks for;
# 2. the Dockerfile with its Rust build stage replaced by the release binary built on the host
#    (`cargo build --release -p ringmq`; the rust image cannot be pulled), built by podman with
#    chroot isolation and the docker format (HEALTHCHECK is kept only there);
# 3. the image's filesystem exported and run with chroot as the image's ringmq user (podman's
#    OCI runtime cannot start containers in this VM: crun fails on setrlimit): the broker
#    starts with the shipped configuration, the image's own HEALTHCHECK command succeeds, and
#    `ringmq check` passes.
#
# Run as root from the repository root: bash deploy/check-image.sh. Needs podman and
# debootstrap (apt-get install -y podman debootstrap). Not part of .ci/run: it takes the
# machine's port 1883 and 9100 and a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/ringmq
[ -x "$BIN" ] || cargo build --release -p ringmq
WORK=$(mktemp -d /tmp/ringmq-image.XXXXXX)
PID=
cleanup() {
    if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    umount "$WORK/root/proc" "$WORK/root/dev" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! podman image exists docker.io/library/debian:bookworm-slim; then
    debootstrap --variant=minbase bookworm "$WORK/base" http://deb.debian.org/debian >/dev/null
    tar -C "$WORK/base" -c . | podman import - docker.io/library/debian:bookworm-slim >/dev/null
    rm -rf "$WORK/base"
fi

mkdir -p "$WORK/ctx/src/target/release"
cp -r deploy "$WORK/ctx/"
cp "$BIN" "$WORK/ctx/src/target/release/ringmq"
python3 - "$WORK/ctx/Dockerfile" <<'EOF'
import sys
s = open("deploy/Dockerfile").read()
start, end = s.index("FROM rust:"), s.index("FROM debian:")
stand_in = ("FROM debian:${DEBIAN_RELEASE}-slim AS build\n"
            "COPY src/target/release/ringmq /src/target/release/ringmq\n\n")
open(sys.argv[1], "w").write(s[:start] + stand_in + s[end:])
EOF
podman build --isolation chroot --format docker -t ringmq-image-check "$WORK/ctx" >/dev/null

HEALTH=$(podman inspect ringmq-image-check |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Healthcheck"]["Test"][-1])')
USER_SPEC=$(podman inspect ringmq-image-check | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Config"]["User"])')
mkdir "$WORK/root"
CID=$(podman create ringmq-image-check)
podman export "$CID" | tar --numeric-owner -C "$WORK/root" -x
podman rm "$CID" >/dev/null
IDS=$(awk -F: -v u="${USER_SPEC%%:*}" '$1 == u { print $3 ":" $4 }' "$WORK/root/etc/passwd")
mount --bind /proc "$WORK/root/proc"
mount --bind /dev "$WORK/root/dev"

chroot --userspec="$IDS" "$WORK/root" /usr/bin/ringmq --config /etc/ringmq/ringmq.toml \
    > "$WORK/broker.log" 2>&1 &
PID=$!
for _ in $(seq 50); do
    grep -q "ringmq listening" "$WORK/broker.log" && break
    sleep 0.1
done
cat "$WORK/broker.log"
chroot --userspec="$IDS" "$WORK/root" bash -c "$HEALTH"
echo "HEALTHCHECK: ok"
chroot --userspec="$IDS" "$WORK/root" /usr/bin/ringmq check -c /etc/ringmq/ringmq.toml
echo "image check: ok"
