#!/usr/bin/env bash
# Real containers for the Job end-to-end tests: podman + runc, and a Debian base image made
# here (no registry can be reached for one). Idempotent: installed tools and an existing
# base image are left alone. The worker image itself is built by the tests (layers cached).
set -euo pipefail
BASE=localhost/debian-base:bookworm

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
        || ! command -v debootstrap >/dev/null 2>&1; then
    echo "[containers] installing podman, runc, debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
# runc (crun is not packaged here) and no default ulimits (the sandbox refuses raising them).
mkdir -p /etc/containers
if ! grep -q 'runtime = "runc"' /etc/containers/containers.conf 2>/dev/null; then
    printf '[engine]\nruntime = "runc"\n\n[containers]\ndefault_ulimits = []\n' \
        > /etc/containers/containers.conf
fi
if ! podman image exists "$BASE"; then
    echo "[containers] building $BASE with debootstrap (~1 min)"
    root="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
    tar -C "$root" -c . | podman import - "$BASE" >/dev/null
    rm -rf "$root"
fi
echo "[containers] podman ready, base image $BASE"
