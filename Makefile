# ngx-ollama-auth: `make run` to try the gate, `make test` to check everything.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
PROFILE_DIR := target/release
MODULE := $(PROFILE_DIR)/libngx_http_ollama_auth_module.so
# Where the vendored build put nginx: `build` copies it here from build.rs's OUT_DIR.
NGINX_BIN = $(shell cat $(PROFILE_DIR)/nginx-build-dir)/nginx
RUN_DIR := .run
PYTEST_ARGS ?=

# Debian packages: building (clang for bindgen, nginx's libraries), Debian's own nginx to build
# against, htpasswd, and the tools the tests and benchmarks use.
APT_PACKAGES := libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config make gcc \
	nginx nginx-dev apache2-utils curl procps python3 prometheus

.PHONY: all build cli install-cli deps lint test unit integration integration-debian debian-module run stop bench hashed-key clean fuzz fuzz-build fuzz-smoke memcheck

all: build

# Installs only what is missing, so a prepared machine pays nothing.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@$(PYTHON) -c 'import pytest, yaml, ollama, openai, prometheus_client, promql_parser' 2>/dev/null || $(PYTHON) -m pip install --quiet pytest pyyaml ollama openai prometheus_client promql-parser
	@$(CARGO) fmt --version >/dev/null 2>&1 && $(CARGO) clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy

# The module (module/, against the nginx that nginx-sys vendors). Its build.rs records the nginx
# build directory in its OUT_DIR; cargo's JSON messages say where that is.
build: deps
	set -o pipefail; $(CARGO) build --release -p ngx-ollama-auth-module --message-format=json-render-diagnostics \
		| $(PYTHON) -c 'import json, sys; dirs = [m["out_dir"] for m in map(json.loads, sys.stdin) \
			if m.get("reason") == "build-script-executed" and "ngx-ollama-auth-module@" in m["package_id"]]; print(dirs[-1])' \
		| { read -r out_dir && cp "$$out_dir/nginx-build-dir" $(PROFILE_DIR)/nginx-build-dir; }

unit: deps
	$(CARGO) test --release -p ngx-ollama-auth

# The key and user management tool: plain Rust, no nginx needed to build or run it.
cli: deps
	$(CARGO) build --release --bin ollama-auth

PREFIX ?= /usr/local
install-cli: cli
	install -D -m 0755 $(PROFILE_DIR)/ollama-auth $(DESTDIR)$(PREFIX)/bin/ollama-auth

integration: build cli debian-module
	cd tests && $(PYTHON) -m pytest -q $(PYTEST_ARGS) .

# Builds the module against Debian's own nginx package with docker/build-module.sh.
debian-module: deps
	NGINX=/usr/sbin/nginx NGINX_SOURCE_DIR=/usr/share/nginx/src OUT_DIR=dist/debian docker/build-module.sh

# The same integration suite, with Debian's stock /usr/sbin/nginx and the module built for it.
integration-debian: build cli debian-module
	cd tests && NGINX_BIN=/usr/sbin/nginx OLLAMA_AUTH_MODULE=$(abspath dist/debian/ngx_http_ollama_auth_module.so) \
		$(PYTHON) -m pytest -q $(PYTEST_ARGS) .

# Formatting and lints, for the module and for the plain-Rust logic with its tests.
lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

test: lint unit integration integration-debian fuzz-smoke

# Fuzzing with AFL++ through afl.rs, on the stable toolchain. fuzz-smoke (part of make test)
# replays every seed and runs each target briefly; `make fuzz` runs each for FUZZ_SECONDS.
FUZZ_TARGETS := authorization keys_file htpasswd_file hash_strings json_body usage_answer limits_state
FUZZ_SECONDS ?= 600
FUZZ_OUT ?= target/fuzz-out
AFL_ENV := AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1

fuzz-build: deps
	@command -v cargo-afl >/dev/null 2>&1 || $(CARGO) install cargo-afl --version 0.18.2 --locked
	@# Builds AFL++ once per toolchain; says so (and fails) when it is built already.
	@$(CARGO) afl config --build >/dev/null 2>&1 || true
	cd fuzz && $(CARGO) afl build --release

fuzz-smoke: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
		for seed in fuzz/corpus/$$t/*; do fuzz/target/release/$$t < $$seed || { echo "$$t crashed on $$seed"; exit 1; }; done; \
	done
	@$(MAKE) -s fuzz FUZZ_SECONDS=10 FUZZ_OUT=target/fuzz-smoke

fuzz: fuzz-build
	@mkdir -p $(FUZZ_OUT)
	@for t in $(FUZZ_TARGETS); do \
		rm -rf $(FUZZ_OUT)/$$t; \
		$(AFL_ENV) $(CARGO) afl fuzz -V $(FUZZ_SECONDS) -i fuzz/corpus/$$t -o $(FUZZ_OUT)/$$t fuzz/target/release/$$t >$(FUZZ_OUT)/$$t.log 2>&1 \
			|| { tail -20 $(FUZZ_OUT)/$$t.log; exit 1; }; \
		stats=$(FUZZ_OUT)/$$t/default/fuzzer_stats; \
		printf '%-14s %s executions, %s crashes, %s hangs, %s paths\n' $$t \
			$$(awk '/^execs_done/{print $$3}' $$stats) $$(awk '/^saved_crashes/{print $$3}' $$stats) \
			$$(awk '/^saved_hangs/{print $$3}' $$stats) $$(awk '/^corpus_count/{print $$3}' $$stats); \
		[ -z "$$(ls $(FUZZ_OUT)/$$t/default/crashes 2>/dev/null | grep -v README)" ] || { echo "$$t: crashes in $(FUZZ_OUT)/$$t/default/crashes"; exit 1; }; \
	done

# The gate on 127.0.0.1:8880 in front of an Ollama on 127.0.0.1:11434, with
# nginx-conf/bearer_token.conf and a sample keys file.
run: build
	@nginx-conf/localize.sh nginx-conf/bearer_token.conf $(RUN_DIR) "$(abspath $(MODULE))" 127.0.0.1:8880 127.0.0.1:11434
	@mkdir -p $(RUN_DIR)/auth
	@[ -f $(RUN_DIR)/auth/api_keys.txt ] || cp nginx-conf/api_keys.example.txt $(RUN_DIR)/auth/api_keys.txt
	@chmod 755 $(RUN_DIR) $(RUN_DIR)/auth; chmod 644 $(RUN_DIR)/auth/api_keys.txt
	@$(NGINX_BIN) -p $(abspath $(RUN_DIR)) -c $(abspath $(RUN_DIR))/nginx.conf -s stop 2>/dev/null; sleep 0.3; true
	$(NGINX_BIN) -p $(abspath $(RUN_DIR)) -c $(abspath $(RUN_DIR))/nginx.conf
	@echo
	@echo "The gate listens on http://127.0.0.1:8880 in front of Ollama at 127.0.0.1:11434."
	@echo "Keys: $(RUN_DIR)/auth/api_keys.txt (edit it; changes count within a second, no reload)."
	@echo "Try:"
	@echo "  curl http://127.0.0.1:8880/api/tags -H 'Authorization: Bearer my-secret-api-key-1'"
	@echo "  curl http://127.0.0.1:8880/api/generate -H 'Authorization: Bearer my-secret-api-key-1' \\"
	@echo "       -d '{\"model\": \"gemma3:1b\", \"prompt\": \"Why is the sky blue?\", \"stream\": false}'"
	@echo "  curl -i http://127.0.0.1:8880/api/tags -H 'Authorization: Bearer wrong-key'   # 401"
	@echo "No Ollama here? In another terminal: python3 tests/fake_ollama.py 11434"
	@echo "Stop with: make stop   (logs in $(RUN_DIR)/logs/)"

stop:
	-$(NGINX_BIN) -p $(abspath $(RUN_DIR)) -c $(abspath $(RUN_DIR))/nginx.conf -s stop

# A keys-file line that holds the key's SHA-256 instead of the key: make hashed-key KEY=... [NAME=...]
hashed-key:
	@[ -n "$(KEY)" ] || { echo "usage: make hashed-key KEY=<key> [NAME=<name>]" >&2; exit 2; }
	@printf '%s' "$$KEY" | sha256sum | awk -v name="$$NAME" '{ line = "sha256:" $$1; if (name != "") line = line " " name; print line }'

# valgrind memcheck over a request mix with re-reads, then worker RSS over a million requests.
memcheck: debian-module
	@$(MAKE) -s deps APT_PACKAGES="valgrind wrk apache2-utils"
	$(PYTHON) tests/memcheck.py

# Benchmarks (issue: the gate against no auth, the Lua block and auth_basic). BENCH_ARGS=--quick
# for a short run.
bench: deps
	bench/run.sh $(BENCH_ARGS)

clean:
	$(CARGO) clean
	rm -rf dist $(RUN_DIR) bench/work
