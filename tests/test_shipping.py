"""What users deploy: the shipped nginx confs, compose stacks, Dockerfile, Kubernetes manifests,
and build-module.sh. There is no Docker engine here: compose files and manifests are checked for
structure, the confs and the build script for real."""

import base64
import json
import os
import re
import socket
import ssl
import shutil
import subprocess
import tempfile
import time
import http.client
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, module_path, nginx_binary, wait_for_port

CONF_DIR = ROOT / "nginx-conf"
DOCKER = ROOT / "docker"
SHIPPED_CONFS = sorted(p.name for p in CONF_DIR.glob("*.conf") if p.name != "ollama_proxy.conf")


def two_free_ports():
    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


class LocalGate:
    """A shipped conf made local by nginx-conf/localize.sh, with credentials and a certificate."""

    def __init__(self, conf_name, ollama_port, conf_path=None):
        self.dir = Path(tempfile.mkdtemp(prefix="ollama-auth-shipped-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.port = two_free_ports()
        conf = conf_path or CONF_DIR / conf_name
        subprocess.run([str(CONF_DIR / "localize.sh"), str(conf), str(self.dir), module_path(),
                        f"127.0.0.1:{self.port}", f"127.0.0.1:{ollama_port}"], check=True)
        (self.dir / "auth").mkdir()
        (self.dir / "auth/api_keys.txt").write_text("shipped-key team\n")
        htpasswd = subprocess.run(["htpasswd", "-nbB", "-C", "5", "myuser", "mypassword"],
                                  capture_output=True, text=True, check=True).stdout
        (self.dir / "auth/htpasswd").write_text(htpasswd)
        subprocess.run([str(DOCKER / "make-cert.sh"), str(self.dir / "certs")], check=True, capture_output=True)
        for path in [self.dir / "auth", self.dir / "certs"]:
            os.chmod(path, 0o755)
            for child in path.iterdir():
                os.chmod(child, 0o644)

    def nginx(self, *args):
        return subprocess.run([nginx_binary(), "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), *args],
                              capture_output=True, text=True, timeout=60)

    def __enter__(self):
        result = self.nginx()
        assert result.returncode == 0, result.stderr
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc):
        self.nginx("-s", "stop")
        time.sleep(0.2)
        log = (self.dir / "logs/error.log").read_text() if (self.dir / "logs/error.log").exists() else ""
        subprocess.run(["rm", "-rf", str(self.dir)])
        assert "exited on signal" not in log


@pytest.mark.parametrize("conf_name", SHIPPED_CONFS)
def test_every_shipped_conf_passes_nginx_t(conf_name, ollama):
    gate = LocalGate(conf_name, ollama.port)
    try:
        result = gate.nginx("-t")
    finally:
        shutil.rmtree(gate.dir, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_shipped_confs_have_what_ollama_needs():
    proxy = (CONF_DIR / "ollama_proxy.conf").read_text()
    for setting in ["proxy_buffering off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                    "proxy_read_timeout 300s;", "proxy_set_header Host localhost:11434;",
                    'proxy_set_header Authorization "";', 'proxy_set_header Accept-Encoding "";']:
        assert setting in proxy, setting
    for name in SHIPPED_CONFS:
        text = (CONF_DIR / name).read_text()
        assert "include /etc/nginx/ollama_proxy.conf;" in text, name
        assert "$ollama_auth_user" in text and "log_format" in text, name
        assert re.search(r"limit_req_zone \$ollama_auth_user zone=\w+", text), name
        assert "keepalive" in text, name
    multi = (CONF_DIR / "multi_ollama.conf").read_text()
    assert "least_conn;" in multi and "max_fails=" in multi and "fail_timeout=" in multi
    assert len(re.findall(r"^\s*server \S+:11434", multi, re.M)) >= 2


def basic_header(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(port, path, headers=None, tls_context=None):
    if tls_context:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=tls_context, timeout=10)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), body


def test_either_auth_conf_serves_both_schemes_and_hides_the_credential(ollama):
    with LocalGate("either_auth.conf", ollama.port) as gate:
        assert get(gate.port, "/healthz")[0] == 200
        status, headers, _ = get(gate.port, "/api/tags")
        assert status == 401
        before = len(ollama.seen)
        assert get(gate.port, "/api/tags", {"Authorization": "Bearer shipped-key"})[0] == 200
        assert get(gate.port, "/api/tags", {"Authorization": basic_header("myuser", "mypassword")})[0] == 200
        assert all("Authorization" not in seen["headers"] for seen in ollama.seen[before:])
        assert all(seen["headers"]["Host"] == "localhost:11434" for seen in ollama.seen[before:])
        # nginx writes the log line after the answer: wait for it.
        from conftest import wait_until
        log = wait_until(lambda: (gate.dir / "logs/access.log").read_text().count("\n") >= 3
                         and (gate.dir / "logs/access.log").read_text(), 5)
        assert " - team [" in log and " - myuser [" in log, log


def test_https_conf_tls_12_and_13_and_plain_http_redirects(ollama):
    with LocalGate("https.conf", ollama.port) as gate:
        tls_port = gate.port + 1
        status, headers, _ = get(gate.port, "/api/tags")
        assert status == 301 and headers["Location"].startswith("https://")
        for version in [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]:
            context = ssl.create_default_context(cafile=str(gate.dir / "certs/gate.crt"))
            context.minimum_version = context.maximum_version = version
            assert get(tls_port, "/api/tags", tls_context=context)[0] == 401
            assert get(tls_port, "/api/tags", {"Authorization": "Bearer shipped-key"}, tls_context=context)[0] == 200
        conf = (CONF_DIR / "https.conf").read_text()
        assert "ssl_protocols       TLSv1.2 TLSv1.3;" in conf


def test_bearer_conf_quick_start_flow(ollama):
    """The guide's steps against the shipped bearer conf: a good key answers, a bad one is 401."""
    with LocalGate("bearer_token.conf", ollama.port) as gate:
        out = subprocess.run(["curl", "-s", f"http://127.0.0.1:{gate.port}/api/generate",
                              "-H", "Authorization: Bearer shipped-key",
                              "-d", '{"model": "gemma3:1b", "prompt": "Why is the sky blue?", "stream": false}'],
                             capture_output=True, text=True, check=True).stdout
        assert '"done": true' in out
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{gate.port}/api/generate",
                               "-H", "Authorization: Bearer invalid-key", "-d", "{}"], capture_output=True, text=True).stdout
        assert code == "401"


def test_shipped_conf_asks_ollama_for_uncompressed_answers(ollama):
    """A compressed answer cannot be read for its counts: the client's Accept-Encoding stays at
    the gate (a cloud model's answer carries ollama.com's headers)."""
    with LocalGate("bearer_token.conf", ollama.port) as gate:
        before = len(ollama.seen)
        out = subprocess.run(["curl", "-s", f"http://127.0.0.1:{gate.port}/api/generate",
                              "-H", "Authorization: Bearer shipped-key", "-H", "Accept-Encoding: gzip, zstd",
                              "-d", '{"model": "gemma3:1b", "prompt": "x", "stream": false}'],
                             capture_output=True, text=True, check=True).stdout
        assert '"done": true' in out
        seen = ollama.seen[before:]
        assert len(seen) == 1 and "Accept-Encoding" not in seen[0]["headers"], seen


def test_kubernetes_configmap_conf_passes_nginx_t(ollama, tmp_path):
    docs = list(yaml.safe_load_all((DOCKER / "kubernetes/gate.yaml").read_text()))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    conf = tmp_path / "k8s.conf"
    conf.write_text(configmap["data"]["nginx.conf"].replace("/dev/stderr", "/var/log/nginx/error.log")
                    .replace("/dev/stdout", "/var/log/nginx/access.log"))
    gate = LocalGate(None, ollama.port, conf_path=conf)
    try:
        (gate.dir / "ollama_proxy.conf").write_text(configmap["data"]["ollama_proxy.conf"].replace("ollama:11434", f"127.0.0.1:{ollama.port}"))
        result = gate.nginx("-t")
    finally:
        shutil.rmtree(gate.dir, ignore_errors=True)
    assert result.returncode == 0, result.stderr


def load_compose(name):
    return yaml.safe_load((DOCKER / name).read_text())


@pytest.mark.parametrize("name,conf,secret", [
    ("compose.bearer.yml", "bearer_token.conf", "api_keys.txt"),
    ("compose.basic.yml", "basic_auth.conf", "htpasswd"),
])
def test_compose_stacks_mirror_the_guide(name, conf, secret):
    stack = load_compose(name)
    ollama, nginx = stack["services"]["ollama"], stack["services"]["nginx"]
    assert ollama["image"] == "ollama/ollama"
    assert "ollama_data:/root/.ollama" in ollama["volumes"]
    assert ollama["restart"] == nginx["restart"] == "unless-stopped"
    assert "ollama_data" in stack["volumes"]
    assert nginx["ports"] == ["8880:80"]
    assert nginx["depends_on"] == ["ollama"] or "ollama" in nginx["depends_on"]
    build = nginx["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
    mounts = {v.split(":")[1]: v for v in nginx["volumes"]}
    assert mounts["/etc/nginx/nginx.conf"] == f"../nginx-conf/{conf}:/etc/nginx/nginx.conf:ro"
    assert mounts["/etc/nginx/auth"].endswith(":ro")
    for volume in nginx["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("../"):
            assert (DOCKER / source).exists(), source
    assert f"/etc/nginx/auth/{secret}" in (CONF_DIR / conf).read_text()
    for service in (ollama, nginx):
        assert service["healthcheck"]["test"][0] == "CMD"


def test_compose_overrides_for_https_and_gpu():
    https = load_compose("compose.https.yml")["services"]["nginx"]
    assert "8443:443" in https["ports"]
    assert "../nginx-conf/https.conf:/etc/nginx/nginx.conf:ro" in https["volumes"]
    assert "./certs:/etc/nginx/certs:ro" in https["volumes"]
    gpu = load_compose("compose.gpu.yml")["services"]["ollama"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_dockerfile_is_multi_stage_on_a_pinned_official_image_and_thin():
    text = (DOCKER / "Dockerfile").read_text()
    image = re.search(r"^ARG NGINX_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+", image), image  # official, Debian-based, pinned
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["${NGINX_IMAGE}", "${NGINX_IMAGE}"]
    assert "docker/build-module.sh" in text
    assert re.search(r"^COPY --from=build \S+ngx_http_ollama_auth_module\.so /usr/lib/nginx/modules/", text, re.M)
    assert "load_module modules/ngx_http_ollama_auth_module.so;" in (CONF_DIR / "bearer_token.conf").read_text()


def test_kubernetes_manifests_structure():
    docs = [d for f in sorted((DOCKER / "kubernetes").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    gate = by_kind["Deployment"]["ollama-gate"]
    assert gate["spec"]["replicas"] >= 2
    pod = gate["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith("ngx-ollama-auth")
    keys_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/nginx/auth")
    assert "subPath" not in keys_mount  # subPath mounts never see Secret updates
    keys_volume = next(v for v in pod["volumes"] if v["name"] == keys_mount["name"])
    secret_name = keys_volume["secret"]["secretName"]
    assert secret_name in by_kind["Secret"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = by_kind["Service"]["ollama-gate"]
    assert service["spec"]["selector"] == gate["spec"]["selector"]["matchLabels"]
    assert by_kind["Service"]["ollama"]["spec"]["ports"][0]["port"] == 11434
    assert "server ollama:11434;" in by_kind["ConfigMap"]["ollama-gate-conf"]["data"]["nginx.conf"]


FAKE_OFFICIAL_NGINX = r"""#!/bin/sh
cat >&2 <<'EOF'
nginx version: nginx/1.30.1
built by gcc 14.2.0 (Debian 14.2.0-19)
configure arguments: --prefix=/etc/nginx --sbin-path=/usr/sbin/nginx --modules-path=/usr/lib/nginx/modules --with-compat --with-file-aio --with-threads --with-http_ssl_module --with-cc-opt='-g -O2 -ffile-prefix-map=/data/builder/debuild/nginx-1.30.1/debian/debuild-base/nginx-1.30.1=. -fstack-protector-strong -Wformat -Werror=format-security -Wp,-D_FORTIFY_SOURCE=2 -fPIC' --with-ld-opt='-Wl,-z,relro -Wl,-z,now -Wl,--as-needed -pie' --with-http_xslt_module=dynamic --add-dynamic-module=/tmp/njs/nginx --with-stream=dynamic --with-openssl=/tmp/openssl-3
EOF
"""


def test_build_module_reads_version_and_keeps_only_what_shapes_nginx(tmp_path):
    fake = tmp_path / "nginx"
    fake.write_text(FAKE_OFFICIAL_NGINX)
    fake.chmod(0o755)
    out = subprocess.run([str(DOCKER / "build-module.sh")], env=dict(os.environ, NGINX=str(fake), DRY_RUN="1"),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "version: 1.30.1"
    args = [line.removeprefix("configure: ") for line in out[1:]]
    assert "--with-compat" in args and "--with-http_ssl_module" in args and "--with-threads" in args
    assert any(a.startswith("--with-cc-opt=-g -O2 ") and a.endswith("-fPIC") for a in args)
    for dropped in ["--with-http_xslt_module=dynamic", "--add-dynamic-module=/tmp/njs/nginx",
                    "--with-stream=dynamic", "--with-openssl=/tmp/openssl-3"]:
        assert dropped not in args


def test_build_module_refuses_a_source_of_another_version(tmp_path):
    fake = tmp_path / "nginx"
    fake.write_text(FAKE_OFFICIAL_NGINX)
    fake.chmod(0o755)
    result = subprocess.run([str(DOCKER / "build-module.sh")],
                            env=dict(os.environ, NGINX=str(fake), NGINX_SOURCE_DIR="/usr/share/nginx/src",
                                     WORK_DIR=str(tmp_path / "work")),
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "source is nginx 1.22.1 but" in result.stderr and "is 1.30.1" in result.stderr


def test_build_module_output_loads_into_debian_nginx():
    """`make integration` first builds dist/debian with build-module.sh (make debian-module)."""
    module = ROOT / "dist/debian/ngx_http_ollama_auth_module.so"
    assert module.exists(), "run `make debian-module` first"
    work = Path(tempfile.mkdtemp(dir="/tmp"))
    (work / "nginx.conf").write_text(f"load_module {module};\nevents {{}}\nhttp {{ ollama_auth_realm x; }}\n")
    result = subprocess.run(["/usr/sbin/nginx", "-t", "-p", str(work), "-c", str(work / "nginx.conf"), "-e", "stderr"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# Usage, metrics and limits (issues 11 and 12): the shipped confs, the monitoring overlay, the
# front conf for several replicas.

MONITORING = DOCKER / "monitoring"
# Every series the gate exposes, a histogram with its three sample names.
SERIES = {"ollama_auth_requests_total", "ollama_auth_prompt_tokens_total", "ollama_auth_completion_tokens_total",
          "ollama_auth_refused_total", "ollama_auth_request_duration_seconds_bucket",
          "ollama_auth_request_duration_seconds_sum", "ollama_auth_request_duration_seconds_count",
          # The fair queue's (ollama_auth_queue; test_queue.py checks its panels).
          "ollama_auth_in_flight", "ollama_auth_queue_capacity", "ollama_auth_queue_waiting",
          "ollama_auth_slot_seconds_total", "ollama_auth_queue_wait_seconds_bucket"}
NEW_VARIABLES = ["$ollama_model", "$ollama_prompt_tokens", "$ollama_completion_tokens", "$ollama_auth_user"]


def nginx_blocks(text, opener):
    """The bodies of every `opener {` block of an nginx conf (comments dropped), braces balanced."""
    text = re.sub(r"#[^\n]*", "", text)
    bodies = []
    for match in re.finditer(re.escape(opener) + r"\s*\{", text):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        bodies.append(text[match.end():i - 1])
    return bodies


def http_level(text):
    """The http block's own directives, without its server and upstream blocks."""
    body = nginx_blocks(text, "http")[0]
    for inner in nginx_blocks(body, "server") + nginx_blocks(body, "upstream"):
        body = body.replace(inner, "")
    return body


def kubernetes_gate_conf():
    docs = list(yaml.safe_load_all((DOCKER / "kubernetes/gate.yaml").read_text()))
    return next(d for d in docs if d["kind"] == "ConfigMap")["data"]["nginx.conf"]


@pytest.mark.parametrize("name", SHIPPED_CONFS + ["kubernetes"])
def test_shipped_confs_count_usage_and_serve_metrics_behind_their_files(name):
    text = kubernetes_gate_conf() if name == "kubernetes" else (CONF_DIR / name).read_text()
    top = http_level(text)
    # At http level, so that every location reading a keys file with limits has a zone.
    assert re.search(r"^\s*ollama_auth_zone ollama 10m( state=\S+)?;", top, re.M), name
    assert re.search(r"^\s*ollama_auth_usage ollama;", top, re.M), name
    log_format = re.search(r"log_format ollama (.*?);", top, re.S).group(1)
    for variable in NEW_VARIABLES:
        assert variable in log_format, (name, variable)
    metrics = [body for body in nginx_blocks(text, "location = /metrics")]
    assert len(metrics) == 1, name
    assert re.search(r"^\s*ollama_auth_metrics ollama;", metrics[0], re.M), name
    # Gated by the same files as the API, never open.
    api = nginx_blocks(text, "location /")[0]
    files = sorted(re.findall(r"ollama_(?:bearer_keys|basic_user)_file \S+;", api))
    assert files and sorted(re.findall(r"ollama_(?:bearer_keys|basic_user)_file \S+;", metrics[0])) == files, name
    assert " off;" not in metrics[0].replace("access_log off;", ""), name
    assert "allow all" not in metrics[0], name


def metrics_samples(text):
    """{(name, frozenset(labels)): value} from a Prometheus text exposition."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r'(\w+)(?:\{(.*)\})? (\S+)', line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def prometheus_scrape(port, scrape_config, credentials_dir):
    """What Prometheus does with the shipped scrape config, against a local gate."""
    auth = scrape_config["authorization"]
    credentials_file = Path(auth["credentials_file"])
    secret = (credentials_dir / credentials_file.name).read_text().strip()
    return get_lower(port, scrape_config["metrics_path"], {"Authorization": f"{auth['type']} {secret}"})


def get_lower(port, path, headers=None):
    """get(), with the answer's header names in lower case."""
    status, answer_headers, body = get(port, path, headers)
    return status, {name.lower(): value for name, value in answer_headers.items()}, body


def test_shipped_bearer_conf_logs_usage_serves_metrics_to_prometheus_and_limits_keys(ollama, tmp_path):
    scrape = yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"][0]
    (tmp_path / Path(scrape["authorization"]["credentials_file"]).name).write_text("scrape-key-0123456789\n")
    gate = LocalGate("bearer_token.conf", ollama.port)
    (gate.dir / "auth/api_keys.txt").write_text(
        "shipped-key team\nscrape-key-0123456789 prometheus scopes=all\nci-key ci requests=2/1m parallel=2\n")
    # A key with limits passes `nginx -t`: every location reading the file has a zone.
    result = gate.nginx("-t")
    if result.returncode != 0:
        subprocess.run(["rm", "-rf", str(gate.dir)])
    assert result.returncode == 0, result.stderr
    with gate:
        connection = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)
        connection.request("POST", "/api/generate", body=b'{"model": "gemma3:1b", "prompt": "hi", "stream": false}',
                           headers={"Authorization": "Bearer shipped-key", "X-Fake-Prompt-Tokens": "11",
                                    "X-Fake-Eval-Count": "5"})
        response = connection.getresponse()
        assert response.status == 200 and b'"done": true' in response.read()
        connection.close()

        from conftest import wait_until
        log = wait_until(lambda: "prompt_tokens=11" in (gate.dir / "logs/access.log").read_text()
                         and (gate.dir / "logs/access.log").read_text(), 5)
        assert log and re.search(r" - team \[.*\] \"POST /api/generate HTTP/1.1\" 200 .* model=gemma3:1b "
                                 r"prompt_tokens=11 completion_tokens=5$", log, re.M), log

        assert get(gate.port, "/api/tags")[0] == 401  # a refusal, counted by reason
        # The metrics location: gated, and a key needs scopes=all; the scrape config gets in.
        assert get(gate.port, "/metrics")[0] == 401
        assert get(gate.port, "/metrics", {"Authorization": "Bearer shipped-key"})[0] == 403
        status, headers, body = prometheus_scrape(gate.port, scrape, tmp_path)
        assert status == 200, body
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = metrics_samples(body.decode())
        team = {("user", "team"), ("model", "gemma3:1b")}
        assert samples[("ollama_auth_prompt_tokens_total", frozenset(team))] == 11
        assert samples[("ollama_auth_completion_tokens_total", frozenset(team))] == 5
        assert samples[("ollama_auth_requests_total", frozenset(team | {("code", "200")}))] == 1
        assert samples[("ollama_auth_refused_total", frozenset({("reason", "no_credential")}))] >= 1
        assert {name for name, _ in samples} <= SERIES
        assert not any(label == "user" and value == "prometheus" for _, labels in samples for label, value in labels)

        # The limited key: admitted twice in the minute, then 429 with the headers of the README.
        for remaining in ["1", "0"]:
            status, headers, _ = get_lower(gate.port, "/api/tags", {"Authorization": "Bearer ci-key"})
            assert status == 200
            assert headers["x-ratelimit-limit-requests"] == "2"
            assert headers["x-ratelimit-remaining-requests"] == remaining
        status, headers, body = get_lower(gate.port, "/api/tags", {"Authorization": "Bearer ci-key"})
        assert status == 429, body
        # At most the period and one of its 15 sub-intervals (the oldest is counted whole).
        assert 1 <= int(headers["retry-after"]) <= 64
        assert json.loads(body) == {"error": "rate limited: requests 2/1m"}


def test_monitoring_overlay_services_and_their_references():
    overlay = load_compose("compose.monitoring.yml")
    base = load_compose("compose.bearer.yml")
    services = overlay["services"]
    assert set(services) == {"prometheus", "grafana"}
    for name, service in services.items():
        image, _, tag = service["image"].partition(":")
        assert image in {"prom/prometheus", "grafana/grafana"} and tag and tag != "latest", service["image"]
        for dependency in service.get("depends_on", []):
            assert dependency in services or dependency in base["services"], dependency
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), source
                assert volume.endswith(":ro"), volume
            else:
                assert source in overlay["volumes"], source
        # Metrics name users: published on the loopback only.
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), service["ports"]
        assert service["healthcheck"]["test"][0] == "CMD"

    def mounts(service):
        return {v.split(":")[1]: DOCKER / v.split(":")[0] for v in service["volumes"] if v.startswith(".")}

    # Prometheus: the config it is told to read is the shipped one; its credentials file lies in
    # a mounted directory; it scrapes the gate service on the port and path the gate conf serves.
    prometheus = services["prometheus"]
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    assert mounts(prometheus)[config_path].resolve() == (MONITORING / "prometheus.yml").resolve()
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    scrape = next(s for s in config["scrape_configs"] if s["job_name"] == "ollama-gate")
    assert scrape["authorization"]["type"] == "Bearer"
    assert "credentials" not in scrape["authorization"]  # a file, never the key in the config
    credentials = Path(scrape["authorization"]["credentials_file"])
    assert str(credentials.parent) in mounts(prometheus), credentials
    assert scrape.get("scheme", "http") == "http"
    conf = (CONF_DIR / "bearer_token.conf").read_text()
    assert f"location = {scrape['metrics_path']} {{" in conf
    for target in scrape["static_configs"][0]["targets"]:
        host, port = target.split(":")
        assert host in base["services"] and f"listen {port};" in conf, target

    # Grafana: provisioning and dashboards mounted where the provisioning files say.
    grafana = services["grafana"]
    grafana_mounts = mounts(grafana)
    assert grafana_mounts["/etc/grafana/provisioning"].resolve() == (MONITORING / "grafana/provisioning").resolve()
    datasources = [d for f in sorted((MONITORING / "grafana/provisioning/datasources").glob("*.yml"))
                   for d in yaml.safe_load(f.read_text())["datasources"]]
    assert [d["type"] for d in datasources] == ["prometheus"]
    url = re.fullmatch(r"http://(\w+):(\d+)", datasources[0]["url"])
    assert url and url.group(1) in services and url.group(2) == prometheus["ports"][0].split(":")[-1], datasources[0]
    providers = [p for f in sorted((MONITORING / "grafana/provisioning/dashboards").glob("*.yml"))
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    dashboards_dir = grafana_mounts[providers[0]["options"]["path"]]
    assert sorted(p.name for p in dashboards_dir.glob("*.json")) == ["ollama-auth.json"]
    dashboard = json.loads((dashboards_dir / "ollama-auth.json").read_text())
    uids = {d["uid"] for d in datasources}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"])
    # The secrets directory ships empty, and keeps what is put there out of git.
    assert (MONITORING / "secrets/.gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]


def dashboard_queries():
    dashboard = json.loads((MONITORING / "grafana/dashboards/ollama-auth.json").read_text())
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    queries += [(v["name"], v["query"]["query"] if isinstance(v["query"], dict) else v["query"])
                for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return dashboard, queries


PROMQL_WORDS = {"sum", "by", "without", "rate", "increase", "irate", "histogram_quantile", "label_replace",
                "label_values", "sort_desc", "or", "and", "unless", "le", "user", "model", "code", "reason",
                "kind", "on", "ignoring", "max", "min", "avg", "count", "topk", "bool", "sum_over_time",
                "last_over_time", "offset"}


def test_dashboard_queries_use_only_the_gate_series():
    dashboard, queries = dashboard_queries()
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used = set()
    for title, query in queries:
        # Strings (label values, regexes, variables) and range selectors are not names.
        bare = re.sub(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\$\w+', "", query)
        names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)) - PROMQL_WORDS
        assert names <= SERIES, (title, names - SERIES)
        assert names, (title, query)
        used |= names
        assert query.count("(") == query.count(")"), title
    assert used >= {"ollama_auth_prompt_tokens_total", "ollama_auth_completion_tokens_total",
                    "ollama_auth_requests_total", "ollama_auth_refused_total",
                    "ollama_auth_request_duration_seconds_bucket"}
    exprs = [q for _, q in queries]
    # The panels the README promises.
    assert any("prompt_tokens" in q and "completion_tokens" in q and re.search(r"by \(user, model\)", q) for q in exprs)
    assert any("ollama_auth_requests_total" in q and "by (code)" in q for q in exprs)
    assert any("ollama_auth_refused_total" in q and "by (reason)" in q for q in exprs)
    for quantile in ["0.5", "0.95"]:
        assert any(q.startswith(f"histogram_quantile({quantile}, sum by (model, le)") for q in exprs), quantile


def test_dashboard_queries_are_valid_promql():
    import promql_parser
    _, queries = dashboard_queries()
    for title, query in queries:
        if query.startswith("label_values("):  # Grafana's, not PromQL
            continue
        concrete = (query.replace("$__rate_interval", "1m").replace("$__range", "6h").replace("$__interval", "15s")
                    .replace("$user", ".*"))
        promql_parser.parse(concrete)  # raises on a syntax error
    with pytest.raises(Exception):
        promql_parser.parse("sum by (user) (rate(ollama_auth_requests_total[1m])")


FRONT = DOCKER / "front/nginx.conf"


def test_front_conf_pins_each_credential_to_one_replica_and_streams():
    text = FRONT.read_text()
    upstream = nginx_blocks(text, "upstream gates")[0]
    assert re.search(r"^\s*hash \$http_authorization consistent;", upstream, re.M)
    servers = re.findall(r"^\s*server (\S+?)[\s;]", upstream, re.M)
    assert len(servers) >= 2 and len(set(servers)) == len(servers), servers
    location = nginx_blocks(text, "location /")[0]
    for setting in ["proxy_pass http://gates;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                    "proxy_buffering off;", "proxy_request_buffering off;", "client_max_body_size 0;"]:
        assert setting in location, setting
    assert int(re.search(r"proxy_read_timeout (\d+)s;", location).group(1)) >= 300
    # A plain nginx that passes the credential on to the gates.
    assert "load_module" not in text and "ollama_" not in re.sub(r"#[^\n]*", "", text)
    assert "Authorization" not in re.sub(r"#[^\n]*", "", location)


def local_front(tmp_path, gate_ports, front_port):
    """docker/front/nginx.conf with the replicas on local ports, and stand-in replicas that answer
    with their name and the Authorization header they received."""
    text = FRONT.read_text()
    names = re.findall(r"^\s*server (gate-\d+):80\b", text, re.M)
    assert len(names) >= 2
    for name, port in zip(names, gate_ports):
        text = re.sub(rf"\bserver {name}:80\b", f"server 127.0.0.1:{port}", text)
    assert not re.search(r"server gate-\d+:", text)
    stand_ins = "".join(
        f'    server {{ listen 127.0.0.1:{port}; location / {{ default_type text/plain; '
        f'return 200 "{name} $http_authorization"; }} }}\n' for name, port in zip(names, gate_ports))
    text = (text.replace("/var/log/nginx/", f"{tmp_path}/logs/")
            .replace("listen 80;", f"listen 127.0.0.1:{front_port};")
            .replace("worker_processes auto;", f"worker_processes 2;\npid {tmp_path}/nginx.pid;"))
    text = text[:text.rindex("}")] + stand_ins + "}\n"
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return names, conf


def test_front_conf_passes_nginx_t_and_hashes_on_the_credential(tmp_path):
    os.chmod(tmp_path, 0o755)
    ports = [free_port() for _ in range(4)]
    names, conf = local_front(tmp_path, ports[1:], ports[0])
    binary = nginx_binary()
    run = lambda *args: subprocess.run([binary, "-p", str(tmp_path), "-c", str(conf), *args],
                                       capture_output=True, text=True, timeout=60)
    result = run("-t")
    assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr
    result = run()
    assert result.returncode == 0, result.stderr
    try:
        wait_for_port(ports[0])
        landed = {}
        for i in range(40):
            header = f"Bearer key-{i}" if i % 2 else basic_header(f"user-{i}", "pw")
            answers = {get(ports[0], "/api/tags", {"Authorization": header})[2].decode() for _ in range(4)}
            assert len(answers) == 1, answers  # always the same replica
            replica, _, forwarded = answers.pop().partition(" ")
            assert forwarded == header  # the credential reaches the gate
            landed.setdefault(replica, 0)
            landed[replica] += 1
        # 40 credentials spread over the replicas (each gets some).
        assert set(landed) == set(names), landed
    finally:
        run("-s", "stop")


# ===================================================================== the stand-in and localize.sh

STAND_IN = ROOT / "tests/fake_ollama.py"


def test_stand_in_help_says_how_to_run_it():
    result = subprocess.run(["python3", str(STAND_IN), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: fake_ollama.py") and "--models" in result.stdout, result.stdout
    result = subprocess.run(["python3", str(STAND_IN), "not-a-port"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "invalid int value" in result.stderr, result.stderr


def test_stand_in_lists_the_models_it_is_given():
    port = free_port()
    process = subprocess.Popen(["python3", str(STAND_IN), str(port), "--models", "gemma3:1b,llama3.2:3b, qwen3:8b"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port)
        models = ["gemma3:1b", "llama3.2:3b", "qwen3:8b"]
        assert [m["name"] for m in json.loads(get(port, "/api/tags")[2])["models"]] == models
        assert [m["model"] for m in json.loads(get(port, "/api/ps")[2])["models"]] == models
        assert [m["id"] for m in json.loads(get(port, "/v1/models")[2])["data"]] == models
    finally:
        process.terminate()
        process.wait(10)
    assert "models gemma3:1b,llama3.2:3b,qwen3:8b" in process.stdout.read()


def stream_end_wait(port, path, body, last_marker, delay):
    """Reads a streamed answer on a raw socket: seconds from its last chunk (`last_marker`) to the
    chunk that ends it, and from the request to that end."""
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
            f"X-Fake-Words: 2\r\nX-Fake-Delay: {delay}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head + data)
        got, last_at = b"", None
        while not got.endswith(b"\r\n0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
            if last_at is None and last_marker in got:
                last_at = time.monotonic()
        ended = time.monotonic()
    assert last_at is not None, got
    return ended - last_at, ended - started


@pytest.mark.parametrize("path,body,last_marker,chunks", [
    ("/v1/chat/completions", {"model": "m", "messages": [], "stream": True}, b"data: [DONE]", 4),
    ("/api/chat", {"model": "m", "messages": []}, b'"done": true', 3),
    ("/v1/messages", {"model": "m", "messages": [], "stream": True}, b"message_stop", 7),
])
def test_stand_in_ends_a_stream_right_after_its_last_chunk(ollama, path, body, last_marker, chunks):
    delay = 0.4
    after_last, total = stream_end_wait(ollama.port, path, body, last_marker, delay)
    assert after_last < delay / 2, after_last
    # The pauses are between chunks: one fewer than the chunks.
    assert (chunks - 1) * delay <= total < (chunks - 1) * delay + delay / 2, total


def test_localize_without_arguments_prints_its_usage(tmp_path):
    for args in [[], ["nginx-conf/bearer_token.conf", str(tmp_path / "out")]]:
        result = subprocess.run([str(CONF_DIR / "localize.sh"), *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result
        assert result.stdout == ""
        assert result.stderr.startswith("usage: ") and "<conf> <out dir> <module .so>" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
