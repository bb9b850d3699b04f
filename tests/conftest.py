"""Fixtures: a real nginx with the module loaded, in front of the stand-in Ollama.

NGINX_BIN and OLLAMA_AUTH_MODULE select the nginx binary and the module; by default, the nginx
built by the vendored build (target/release/nginx-build-dir says where) and the module beside it.
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fake_ollama import FakeOllama

ROOT = Path(__file__).resolve().parents[1]


def nginx_binary():
    if os.environ.get("NGINX_BIN"):
        return os.environ["NGINX_BIN"]
    build_dir = (ROOT / "target/release/nginx-build-dir").read_text().strip()
    return str(Path(build_dir) / "nginx")


def module_path():
    return os.environ.get("OLLAMA_AUTH_MODULE") or str(ROOT / "target/release/libngx_http_ollama_auth_module.so")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {port}")


def process_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body

    def header(self, name):
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        import json
        return json.loads(self.body)

    def error_message(self, path=None):
        """The message of an error answer, checked to be in the shape the clients of `path` read
        (when given): Ollama's {"error": "..."}, OpenAI's {"error": {"message", "type", "param",
        "code"}} on /v1, Anthropic's {"type": "error", "error": {"type", "message"}} on
        /v1/messages."""
        document = self.json()
        error = document["error"]
        if path is None:
            return error["message"] if isinstance(error, dict) else error
        bare = path.split("?")[0]
        if bare == "/v1/messages" or bare.startswith("/v1/messages/"):
            assert document["type"] == "error" and set(error) == {"type", "message"}, document
        elif bare == "/v1" or bare.startswith("/v1/"):
            assert set(error) == {"message", "type", "param", "code"} and error["param"] is None, document
        else:
            assert isinstance(error, str) and set(document) == {"error"}, document
            return error
        return error["message"]

    def __repr__(self):
        return f"Response({self.status}, {self.body[:200]!r})"


class Gate:
    """One nginx instance in a directory of its own that the workers (user nobody) can read."""

    def __init__(self, binary, module, upstream_port):
        self.binary = binary
        self.module = module
        self.upstream = f"127.0.0.1:{upstream_port}"
        self.dir = Path(tempfile.mkdtemp(prefix="ollama-auth-test-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        (self.dir / "html").mkdir()
        (self.dir / "logs").mkdir()  # nginx opens its built-in logs/error.log before reading nginx.conf
        (self.dir / "html/index.html").write_text("static ok\n")
        os.chmod(self.dir / "html/index.html", 0o644)
        self.port = free_port()
        self.process = None

    def path(self, name):
        return self.dir / name

    def write(self, name, content, mode=0o644):
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
        os.chmod(path, mode)
        return path

    def configure(self, server_body, http_extra="", workers=1, main_extra=""):
        """Writes nginx.conf: one server on self.port; `{upstream}` and `{dir}` are filled in."""
        body = server_body.replace("{upstream}", self.upstream).replace("{dir}", str(self.dir))
        http_extra = http_extra.replace("{dir}", str(self.dir))
        self.write("nginx.conf", f"""
load_module {self.module};
worker_processes {workers};
error_log {self.dir}/error.log info;
pid {self.dir}/nginx.pid;
{main_extra}
events {{ worker_connections 512; }}
http {{
    access_log {self.dir}/access.log;
    {http_extra}
    server {{
        listen 127.0.0.1:{self.port};
        root {self.dir}/html;
        {body}
    }}
}}
""")

    def run_nginx(self, *args):
        return subprocess.run([self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), *args],
                              capture_output=True, text=True, timeout=60)

    def test_config(self):
        result = self.run_nginx("-t")
        return result.returncode, result.stderr

    def start(self):
        result = self.run_nginx()
        assert result.returncode == 0, result.stderr
        self.start_output = result.stderr  # what the configuration load said, before error_log opens
        wait_for_port(self.port)
        # Wait for the workers to be up, not only the listening socket.
        deadline = time.time() + 10
        while time.time() < deadline and "start worker process" not in self.error_log():
            time.sleep(0.02)
        return self

    def master_pid(self):
        return int((self.dir / "nginx.pid").read_text())

    def worker_pids(self):
        out = subprocess.run(["pgrep", "-P", str(self.master_pid())], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def reload(self):
        old = set(self.worker_pids())
        os.kill(self.master_pid(), signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline:
            now = set(self.worker_pids())
            if now and not (now & old):
                return
            time.sleep(0.05)
        raise TimeoutError("workers were not replaced after SIGHUP")

    def stop(self):
        try:
            pid = self.master_pid()
        except (FileNotFoundError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        # The daemonized master is reaped by init, maybe late: a zombie has stopped.
        if not wait_until(lambda: not process_alive(pid), 10):
            os.kill(pid, signal.SIGKILL)

    def error_log(self):
        """The error log, after what the start command printed while loading the configuration."""
        try:
            log = (self.dir / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            log = ""
        return getattr(self, "start_output", "") + log

    def request(self, path="/", method="GET", headers=None, body=None, timeout=10):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in (headers or {}).items() if isinstance(headers, dict) else (headers or []):
                connection.putheader(name, value)
            if body is not None:
                data = body if isinstance(body, bytes) else body.encode()
                connection.putheader("Content-Length", str(len(data)))
                connection.endheaders(data)
            else:
                connection.endheaders()
            response = connection.getresponse()
            return Response(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def raw(self, data, timeout=5):
        """Sends raw bytes and returns the raw answer: for requests http.client refuses to send."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            except socket.timeout:
                pass
            return b"".join(chunks)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ollama():
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def make_gate(ollama):
    gates = []

    def make():
        gate = Gate(nginx_binary(), module_path(), ollama.port)
        gates.append(gate)
        return gate

    yield make
    for gate in gates:
        crashed = "exited on signal" in gate.error_log()
        gate.cleanup()
        assert not crashed, "an nginx worker crashed"


@pytest.fixture
def gate(make_gate):
    return make_gate()


def wait_until(predicate, timeout, interval=0.02):
    """Polls predicate until it is true or the timeout passes; returns its last value."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() > deadline:
            return value
        time.sleep(interval)


def zstd_frame(data, rle=()):
    """A zstd frame (1 MB window) of raw blocks holding `data`, then RLE blocks: (byte, count)."""
    blocks = [(0, data[i:i + (128 << 10)], len(data[i:i + (128 << 10)])) for i in range(0, len(data), 128 << 10)]
    for byte, count in rle:
        for start in range(0, count, 128 << 10):
            blocks.append((1, bytes([byte]), min(count - start, 128 << 10)))
    blocks = blocks or [(0, b"", 0)]
    out = bytearray(b"\x28\xb5\x2f\xfd\x00" + bytes([10 << 3]))
    for index, (kind, content, size) in enumerate(blocks):
        header = (index == len(blocks) - 1) | (kind << 1) | (size << 3)
        out += header.to_bytes(3, "little") + content
    return bytes(out)
