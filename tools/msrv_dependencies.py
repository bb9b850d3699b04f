"""Reads `cargo metadata` (for the host platform) on stdin and fails, naming them, if any package declares a
rust-version newer than the one given (the workspace's): `make msrv` without that toolchain."""

import json
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


declared = version(sys.argv[1])
newer = [f"{p['name']} {p['version']} needs Rust {p['rust_version']}"
         for p in json.load(sys.stdin)["packages"]
         if p.get("rust_version") and version(p["rust_version"]) > declared]
for line in newer:
    print(line)
sys.exit(1 if newer else 0)
