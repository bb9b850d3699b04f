#!/usr/bin/env bash
# Turns a conf written for the Docker image into one for a local nginx:
#   localize.sh <conf> <out dir> <module .so> <listen addr:port> <ollama addr:port>
# Files under /etc/nginx/ are looked for in <out dir>, logs go to <out dir>/logs, every Ollama
# server becomes <ollama addr:port>, and `listen 80` becomes the given address (`listen 443`
# becomes the same host on port+1). Writes <out dir>/nginx.conf (and the included files).
set -euo pipefail
if [ $# -ne 5 ]; then
    echo "usage: $0 <conf> <out dir> <module .so> <listen addr:port> <ollama addr:port>" >&2
    exit 2
fi
conf=$1 out=$2 module=$3 listen=$4 ollama=$5
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
listen_host=${listen%:*} listen_port=${listen##*:}
tls_listen="$listen_host:$((listen_port + 1))"

localize() {
    sed -E \
        -e "s#^load_module modules/ngx_http_ollama_auth_module.so;#load_module $module;#" \
        -e "s#/etc/nginx/#$out/#g" \
        -e "s#/var/log/nginx/#$out/logs/#g" \
        -e "s#listen 80;#listen $listen;#" \
        -e "s#listen 443 ssl;#listen $tls_listen ssl;#" \
        -e "s#(server |http://)ollama[A-Za-z0-9_-]*:11434#\\1$ollama#g" \
        -e "s#^worker_processes auto;#worker_processes 1;\npid $out/nginx.pid;#" \
        "$1"
}

localize "$conf" > "$out/nginx.conf"
localize "$here/ollama_proxy.conf" > "$out/ollama_proxy.conf"
chmod 755 "$out" "$out/logs"
chmod 644 "$out/nginx.conf" "$out/ollama_proxy.conf"
