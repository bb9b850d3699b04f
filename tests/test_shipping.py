"""What users deploy: the shipped nginx confs, compose stacks, Dockerfile, Kubernetes manifests,
and build-module.sh. There is no Docker engine here: compose files and manifests are checked for
structure, the confs and the build script for real."""

import base64
import os
import re
import socket
import ssl
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
    result = gate.nginx("-t")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_shipped_confs_have_what_ollama_needs():
    proxy = (CONF_DIR / "ollama_proxy.conf").read_text()
    for setting in ["proxy_buffering off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                    "proxy_read_timeout 300s;", "proxy_set_header Host localhost:11434;",
                    'proxy_set_header Authorization "";']:
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


def test_kubernetes_configmap_conf_passes_nginx_t(ollama, tmp_path):
    docs = list(yaml.safe_load_all((DOCKER / "kubernetes/gate.yaml").read_text()))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    conf = tmp_path / "k8s.conf"
    conf.write_text(configmap["data"]["nginx.conf"].replace("/dev/stderr", "/var/log/nginx/error.log")
                    .replace("/dev/stdout", "/var/log/nginx/access.log"))
    gate = LocalGate(None, ollama.port, conf_path=conf)
    (gate.dir / "ollama_proxy.conf").write_text(configmap["data"]["ollama_proxy.conf"].replace("ollama:11434", f"127.0.0.1:{ollama.port}"))
    result = gate.nginx("-t")
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
