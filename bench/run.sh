#!/usr/bin/env bash
# make bench: builds the module for Debian's nginx, installs the load tools, runs bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(wrk valgrind libnginx-mod-http-lua apache2-utils curl util-linux)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The plotting library goes in the checkout's venv (make deps makes it), never the system Python.
make -s deps debian-module
python=.venv/bin/python
$python -c 'import matplotlib' 2>/dev/null || $python -m pip install --quiet matplotlib
exec $python bench/bench.py "$@"
