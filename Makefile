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

# What building needs (clang for bindgen, nginx's libraries); `make run` installs only these.
BUILD_PACKAGES := libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config make gcc
# What testing adds: Debian's own nginx to build against and test with, htpasswd, Prometheus for
# the monitoring check, a venv for the Python test tools.
TEST_PACKAGES := $(BUILD_PACKAGES) nginx nginx-dev apache2-utils curl procps python3 python3-venv prometheus
# The Python test tools live in a venv inside the checkout, never in the system Python.
VENV := .venv
VENV_PYTHON := $(abspath $(VENV))/bin/python
PYTHON_TEST_PACKAGES := pytest pyyaml ollama openai anthropic prometheus_client promql-parser
RUST_MIN := $(shell sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
PORT ?= 8880
OLLAMA ?= 127.0.0.1:11434

.PHONY: all help build cli install-cli toolchain deps-build deps lint lint-debian deny msrv unit integration integration-debian debian-module run stop bench hashed-key clean fuzz fuzz-build fuzz-smoke memcheck

all: build

help:
	@echo "make run [PORT=8880 OLLAMA=127.0.0.1:11434]   build and start the gate (make stop stops it)"
	@echo "make test                                    lint, unit, integration on two nginx builds, fuzz smoke"
	@echo "make lint | lint-debian | deny | msrv | unit | integration | integration-debian | fuzz-smoke"
	@echo "                                              the parts of make test"
	@echo "make bench | memcheck | fuzz                  benchmarks, valgrind, long fuzzing"
	@echo "make cli | install-cli                        the ollama-auth tool"

# One line, not a cargo error, when the toolchain is older than the declared rust-version.
toolchain:
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "Rust $(RUST_MIN) or newer is needed: install it with rustup (https://rustup.rs), not Debian's cargo"; exit 1; }
	@have=$$(rustc --version | awk '{print $$2}'); \
	if [ "$$(printf '%s\n%s\n' "$(RUST_MIN)" "$${have%%-*}" | sort -V | head -1)" != "$(RUST_MIN)" ]; then \
		echo "Rust $(RUST_MIN) or newer is needed, this is $$have: install a current toolchain with rustup (https://rustup.rs)"; exit 1; fi

# Installs only the Debian packages that are missing, without starting any service they carry
# (policy-rc.d 101: Debian's nginx package would otherwise start a system nginx on port 80).
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages; run: sudo apt-get install $$missing"; exit 1; fi; \
		echo "installing Debian packages:" $$missing; \
		policy=/usr/sbin/policy-rc.d; [ -e $$policy ] && had_policy=1 || { printf '#!/bin/sh\nexit 101\n' > $$policy; chmod 755 $$policy; }; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
		[ -n "$${had_policy:-}" ] || rm -f $$policy; exit $$rc; \
	fi
endef

deps-build: toolchain
	$(call apt_install,$(BUILD_PACKAGES))

deps: deps-build
	$(call apt_install,$(TEST_PACKAGES))
	@[ -x $(VENV_PYTHON) ] || $(PYTHON) -m venv $(VENV)
	@# Imports and pytest's own start-up: a half-deleted .venv/ is mended here, not in mid-test.
	@{ $(VENV_PYTHON) -c 'import pytest, yaml, ollama, openai, anthropic, prometheus_client, promql_parser' \
		&& $(VENV_PYTHON) -m pytest --version; } >/dev/null 2>&1 \
		|| $(VENV_PYTHON) -m pip install --quiet --force-reinstall $(PYTHON_TEST_PACKAGES)
	@$(CARGO) fmt --version >/dev/null 2>&1 && $(CARGO) clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy

# The module (module/, against the nginx that nginx-sys vendors). Its build.rs records the nginx
# build directory in its OUT_DIR; cargo's JSON messages say where that is.
build: deps-build
	set -o pipefail; $(CARGO) build --release -p ngx-ollama-auth-module --message-format=json-render-diagnostics \
		| $(PYTHON) -c 'import json, sys; dirs = [m["out_dir"] for m in map(json.loads, sys.stdin) \
			if m.get("reason") == "build-script-executed" and "ngx-ollama-auth-module@" in m["package_id"]]; print(dirs[-1])' \
		| { read -r out_dir && cp "$$out_dir/nginx-build-dir" $(PROFILE_DIR)/nginx-build-dir; }

unit: toolchain
	$(CARGO) test --release -p ngx-ollama-auth

# The key and user management tool: plain Rust, no nginx needed to build or run it.
cli: toolchain
	$(CARGO) build --release --bin ollama-auth

PREFIX ?= /usr/local
install-cli: cli
	install -D -m 0755 $(PROFILE_DIR)/ollama-auth $(DESTDIR)$(PREFIX)/bin/ollama-auth

integration: deps build cli debian-module
	cd tests && $(VENV_PYTHON) -m pytest -q $(PYTEST_ARGS) .

# Builds the module against Debian's own nginx package with docker/build-module.sh.
debian-module: deps
	NGINX=/usr/sbin/nginx NGINX_SOURCE_DIR=/usr/share/nginx/src OUT_DIR=dist/debian docker/build-module.sh

# The same integration suite, with Debian's stock /usr/sbin/nginx and the module built for it.
integration-debian: deps build cli debian-module
	cd tests && NGINX_BIN=/usr/sbin/nginx OLLAMA_AUTH_MODULE=$(abspath dist/debian/ngx_http_ollama_auth_module.so) \
		$(VENV_PYTHON) -m pytest -q $(PYTEST_ARGS) .

# Formatting and lints, for the module and for the plain-Rust logic with its tests, and for the
# fuzz workspace. No root needed.
lint: toolchain
	@$(CARGO) fmt --version >/dev/null 2>&1 && $(CARGO) clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	cd fuzz && $(CARGO) fmt --check && $(CARGO) clippy --release --all-targets -- -D warnings

# The module as docker/build-module.sh builds it for Debian's nginx (--no-default-features).
lint-debian: debian-module
	@work=$(CURDIR)/target/nginx-$$(/usr/sbin/nginx -v 2>&1 | sed 's|.*nginx/||'); \
	NGINX_BUILD_DIR=$$work/src/objs NGINX_SOURCE_DIR=$$work/src CARGO_TARGET_DIR=$$work/target \
		$(CARGO) clippy --release --locked -p ngx-ollama-auth-module --no-default-features -- -D warnings

# Licences, banned crates and sources of every dependency (cargo-deny, from crates.io). The
# advisories need the RustSec database, which these machines cannot fetch: where the network
# allows, run `cargo deny check advisories` too.
deny: toolchain
	@command -v cargo-deny >/dev/null 2>&1 || $(CARGO) install cargo-deny --version 0.20.2 --locked
	$(CARGO) deny check licenses bans sources

# The declared rust-version. With that toolchain installed (`rustup toolchain install $(RUST_MIN)`)
# it builds everything with it; without it (these machines have one toolchain), it checks that no
# dependency declares a newer one and that the code calls no std API newer than it
# (clippy::incompatible_msrv). Language features newer than it are only caught by the real build.
msrv: toolchain
	@if rustup toolchain list 2>/dev/null | grep -q "^$(RUST_MIN)"; then \
		$(CARGO) +$(RUST_MIN) build --release --locked --workspace --all-targets; \
	else \
		echo "msrv: no $(RUST_MIN) toolchain here; checking dependencies and std APIs against it"; \
		$(CARGO) metadata --format-version 1 --locked --filter-platform $$(rustc -vV | sed -n 's/^host: //p') \
			| $(PYTHON) tools/msrv_dependencies.py $(RUST_MIN) && \
		$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings -D clippy::incompatible_msrv; \
	fi

test: lint lint-debian deny msrv unit integration integration-debian fuzz-smoke

# Fuzzing with AFL++ through afl.rs, on the stable toolchain. fuzz-smoke (part of make test)
# replays every seed and runs each target briefly; `make fuzz` runs each for FUZZ_SECONDS.
FUZZ_TARGETS := authorization keys_file htpasswd_file hash_strings json_body usage_answer limits_state caps_body poll_answer queue_ops
FUZZ_SECONDS ?= 600
FUZZ_OUT ?= target/fuzz-out
AFL_ENV := AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1

fuzz-build: deps-build
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

# The gate on 127.0.0.1:$(PORT) in front of an Ollama at $(OLLAMA), with
# nginx-conf/bearer_token.conf and a sample keys file. With nothing answering at a loopback
# $(OLLAMA), the stand-in (tests/fake_ollama.py, standard library only) starts there.
GATE = $(NGINX_BIN) -p $(abspath $(RUN_DIR)) -c $(abspath $(RUN_DIR))/nginx.conf
OLLAMA_HOST = $(firstword $(subst :, ,$(OLLAMA)))
OLLAMA_PORT = $(lastword $(subst :, ,$(OLLAMA)))
answers = timeout 2 bash -c 'exec 3<>/dev/tcp/$(1)/$(2)' 2>/dev/null

run: build cli
	@nginx-conf/localize.sh nginx-conf/bearer_token.conf $(RUN_DIR) "$(abspath $(MODULE))" 127.0.0.1:$(PORT) $(OLLAMA)
	@mkdir -p $(RUN_DIR)/auth
	@[ -f $(RUN_DIR)/auth/api_keys.txt ] || cp nginx-conf/api_keys.example.txt $(RUN_DIR)/auth/api_keys.txt
	@chmod 755 $(RUN_DIR) $(RUN_DIR)/auth; chmod 644 $(RUN_DIR)/auth/api_keys.txt
	@[ -f $(RUN_DIR)/nginx.pid ] && $(GATE) -s stop 2>/dev/null && sleep 0.3; true
	@if $(call answers,$(OLLAMA_HOST),$(OLLAMA_PORT)); then \
		echo "Ollama answers at $(OLLAMA): using it."; \
	elif [ "$(OLLAMA_HOST)" = 127.0.0.1 ] || [ "$(OLLAMA_HOST)" = localhost ]; then \
		nohup $(PYTHON) tests/fake_ollama.py $(OLLAMA_PORT) >$(RUN_DIR)/logs/fake_ollama.log 2>&1 & echo $$! > $(RUN_DIR)/fake_ollama.pid; \
		for i in $$(seq 50); do $(call answers,$(OLLAMA_HOST),$(OLLAMA_PORT)) && break; sleep 0.1; done; \
		echo "Nothing answered at $(OLLAMA): started the stand-in Ollama (tests/fake_ollama.py) there; make stop stops it."; \
	else echo "Nothing answers at $(OLLAMA) yet: requests will get 502 until Ollama runs there."; fi
	$(GATE)
	@echo
	@echo "The gate listens on http://127.0.0.1:$(PORT) in front of Ollama at $(OLLAMA)."
	@echo "Keys: $(RUN_DIR)/auth/api_keys.txt (edit it; changes count within a second, no reload)."
	@echo "Try:"
	@echo "  curl http://127.0.0.1:$(PORT)/api/tags -H 'Authorization: Bearer my-secret-api-key-1'"
	@echo "  curl http://127.0.0.1:$(PORT)/api/generate -H 'Authorization: Bearer my-secret-api-key-1' \\"
	@echo "       -d '{\"model\": \"gemma3:1b\", \"prompt\": \"Why is the sky blue?\", \"stream\": false}'"
	@echo "  curl -i http://127.0.0.1:$(PORT)/api/tags -H 'Authorization: Bearer wrong-key'   # 401"
	@echo "  curl http://127.0.0.1:$(PORT)/metrics -H 'Authorization: Bearer admin-key-abcdef'   # Prometheus (scopes=all keys only)"
	@echo "Manage keys with the ollama-auth tool, pointed at the running gate's files:"
	@echo "  export OLLAMA_AUTH_KEYS=$(abspath $(RUN_DIR))/auth/api_keys.txt"
	@echo "  $(PROFILE_DIR)/ollama-auth key new bob     # then: ollama-auth key list"
	@echo "Stop with: make stop   (logs in $(RUN_DIR)/logs/)"

# Stops what `make run` started: the gate, and the stand-in if it started one.
stop:
	@stopped=; \
	if [ -f $(RUN_DIR)/nginx.pid ] && kill -0 $$(cat $(RUN_DIR)/nginx.pid) 2>/dev/null; then \
		$(GATE) -s stop && stopped="the gate"; fi; \
	if [ -f $(RUN_DIR)/fake_ollama.pid ]; then \
		kill $$(cat $(RUN_DIR)/fake_ollama.pid) 2>/dev/null && stopped="$${stopped:+$$stopped and }the stand-in Ollama"; \
		rm -f $(RUN_DIR)/fake_ollama.pid; fi; \
	echo "$${stopped:-nothing to stop: make run has no gate running}$${stopped:+ stopped}"

# A keys-file line that holds the key's SHA-256 instead of the key: make hashed-key KEY=... [NAME=...]
hashed-key:
	@[ -n "$(KEY)" ] || { echo "usage: make hashed-key KEY=<key> [NAME=<name>]" >&2; exit 2; }
	@printf '%s' "$$KEY" | sha256sum | awk -v name="$$NAME" '{ line = "sha256:" $$1; if (name != "") line = line " " name; print line }'

# valgrind memcheck over a request mix with re-reads, then worker RSS over a million requests.
memcheck: debian-module
	$(call apt_install,valgrind wrk apache2-utils)
	$(VENV_PYTHON) tests/memcheck.py

# Benchmarks (issue: the gate against no auth, the Lua block and auth_basic). BENCH_ARGS=--quick
# for a short run.
bench: deps
	bench/run.sh $(BENCH_ARGS)

clean:
	$(CARGO) clean
	rm -rf dist $(RUN_DIR) bench/work
