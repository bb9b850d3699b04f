#!/usr/bin/env bash
# A self-signed certificate for trying the HTTPS stack locally (not for production):
#   docker/make-cert.sh [dir]    writes <dir>/gate.crt and <dir>/gate.key (default: docker/certs)
# Clients must trust gate.crt (curl --cacert docker/certs/gate.crt https://localhost:8443/...).
set -euo pipefail
dir=${1:-$(dirname "$0")/certs}
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -sha256 \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/gate.key" -out "$dir/gate.crt" 2>/dev/null
chmod 644 "$dir/gate.crt"
chmod 640 "$dir/gate.key"
echo "$dir/gate.crt and $dir/gate.key (valid 365 days, for localhost and 127.0.0.1)"
