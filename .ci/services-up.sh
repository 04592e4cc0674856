#!/usr/bin/env bash
# Bring up the services the test suite talks to: PostgreSQL (Optuna storage) and a real
# single-node Slurm with accounting. Idempotent: running services are left alone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! command -v pg_isready >/dev/null 2>&1; then
    echo "[services] installing PostgreSQL"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if ! pg_ready; then
    echo "[services] starting PostgreSQL"
    ver="$(ls /etc/postgresql | sort -V | tail -n1)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
fi
pg_ready || { echo "[services] PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
# Tests connect as postgres over TCP without a password (trust auth on the service machines;
# a fresh install needs it set, so make it so for loopback only).
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    hba="$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    ver="$(ls /etc/postgresql | sort -V | tail -n1)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
    sleep 1
fi
psql -h 127.0.0.1 -U postgres -d postgres -Atc "select 1 from pg_database where datname='test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -c 'create database test' >/dev/null
echo "[services] PostgreSQL ready"

if [ -x "$here/slurm-up.sh" ] || [ -f "$here/slurm-up.sh" ]; then
    bash "$here/slurm-up.sh"
fi

# podman and a Debian base image for the container end-to-end tests.
bash "$here/containers-up.sh"

# kubectl: its built-in kustomize builds k8s/ in tests/backends/test_backend_k8s.py (no
# cluster needed); under CI that test fails when kubectl is missing. Debian's
# kubernetes-client (1.20, kustomize v2.0.3) and newer kubectls build k8s/ alike.
if ! command -v kubectl >/dev/null 2>&1; then
    echo "[services] installing kubectl (kubernetes-client: kustomize build of k8s/)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
fi
command -v kubectl >/dev/null 2>&1 || { echo "[services] kubectl is still missing" >&2; exit 1; }

# Headless Chromium renders `launch report` pages in the report tests.
if ! command -v chromium >/dev/null 2>&1; then
    echo "[services] installing chromium (report rendering tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
