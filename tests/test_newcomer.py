"""What a new user hits (issue 23): refusals in the shape each client library reads, nginx's own
errors as JSON, an exact Retry-After, a whole answer counted as 200 however its client closes,
the state file's mode, and what `nginx -t` says about a bad scope or a prefix location.

Not covered here: a real Ollama, HTTP/2, and nginx's own 503s other than limit_req's."""

import json
import os
import pwd
import random
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import anthropic
import ollama as ollama_library
import openai
import pytest

from conftest import ROOT, free_port, wait_until
from test_bearer import PROXY
from test_limits import duration, send, start, state_dir
from test_usage import REQUESTS, open_stream, read_until, settled

KEYS = ("k-chat chatter models=gemma3* scopes=read,infer\n"
        "k-lim limited requests=1/3s\n"
        "k-all admin scopes=all\n")
CHAT = [{"role": "user", "content": "sky?"}]


def base(gate, path=""):
    return f"http://127.0.0.1:{gate.port}{path}"


def test_each_client_library_shows_the_gate_s_message(gate):
    """The OpenAI SDK, ollama-python and the Anthropic SDK put the gate's message text in their
    exceptions, for a 401, 403, 400 and 429 of the gate's own."""
    start(gate, KEYS)
    sdk = lambda key: openai.OpenAI(base_url=base(gate, "/v1"), api_key=key, max_retries=0)
    claude = lambda key: anthropic.Anthropic(base_url=base(gate), auth_token=key, max_retries=0)
    native = lambda key: ollama_library.Client(host=base(gate), headers={"Authorization": f"Bearer {key}"})

    cases = [
        (401, "unauthorized: a valid API key is required", "nope", "gemma3:1b"),
        (403, 'forbidden: this key may not use model "llama3"', "k-chat", "llama3"),
        (400, "bad request: ", "k-chat", "bad name!"),
    ]
    for status, text, key, model in cases:
        with pytest.raises(openai.APIStatusError) as error:
            sdk(key).chat.completions.create(model=model, messages=CHAT)
        assert error.value.status_code == status and text in str(error.value), str(error.value)
        with pytest.raises(anthropic.APIStatusError) as error:
            claude(key).messages.create(model=model, max_tokens=10, messages=CHAT)
        assert error.value.status_code == status and text in str(error.value), str(error.value)
        with pytest.raises(ollama_library.ResponseError) as error:
            native(key).chat(model=model, messages=CHAT)
        assert error.value.status_code == status and text in str(error.value), str(error.value)

    assert sdk("k-lim").chat.completions.create(model="gemma3:1b", messages=CHAT).choices
    with pytest.raises(openai.RateLimitError) as error:
        sdk("k-lim").chat.completions.create(model="gemma3:1b", messages=CHAT)
    assert "rate limited: requests 1/3s" in str(error.value)
    with pytest.raises(anthropic.RateLimitError) as error:
        claude("k-lim").messages.create(model="gemma3:1b", max_tokens=10, messages=CHAT)
    assert "rate limited: requests 1/3s" in str(error.value)
    with pytest.raises(ollama_library.ResponseError) as error:
        native("k-lim").chat(model="gemma3:1b", messages=CHAT)
    assert error.value.status_code == 429 and "rate limited: requests 1/3s" in str(error.value)


def test_refusals_take_the_shape_of_their_endpoint(gate):
    start(gate, KEYS, location_extra="client_max_body_size 200k; ollama_auth_json_errors on;")
    for path in ["/api/chat", "/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings"]:
        refused = send(gate, "k-chat", path, {"model": "llama3", "messages": CHAT, "input": "x"})
        assert refused.status == 403, (path, refused)
        assert refused.error_message(path) == 'forbidden: this key may not use model "llama3"'
        stranger = send(gate, "wrong", path, {"model": "gemma3"})
        assert stranger.status == 401 and stranger.error_message(path).startswith("unauthorized: ")
        # The gate's own 413 and nginx's alike.
        too_large = send(gate, "k-chat", path, {"model": "gemma3", "prompt": "x" * 300_000})
        assert too_large.status == 413 and too_large.error_message(path).startswith("request entity too large")


def down_gate(gate, closed_port):
    """Ollama down (nothing listens), limit_req in front, JSON errors on."""
    gate.write("keys.txt", KEYS)
    gate.configure(f"""
        location / {{
            ollama_bearer_keys_file keys.txt;
            ollama_auth_json_errors on;
            limit_req zone=per_user burst=1 nodelay;
            limit_req_status 429;
            proxy_pass http://127.0.0.1:{closed_port};
        }}
        location /plain/ {{
            ollama_bearer_keys_file keys.txt;
            ollama_auth_path_prefix /plain;
            proxy_pass http://127.0.0.1:{closed_port};
        }}
        location /own/ {{
            ollama_bearer_keys_file keys.txt;
            ollama_auth_path_prefix /own;
            ollama_auth_json_errors on;
            error_page 502 /own-page.html;
            proxy_pass http://127.0.0.1:{closed_port};
        }}
        location = /own-page.html {{ internal; }}
        location = /metrics {{ ollama_auth_metrics lim; allow 127.0.0.1; deny all; }}
    """, http_extra="ollama_auth_zone lim 1m; ollama_auth_usage lim; limit_req_zone $ollama_auth_user zone=per_user:1m rate=1r/m;")
    gate.write("html/own-page.html", "our own page\n")
    return gate.start()


def test_nginx_s_own_errors_answer_json_counted_and_with_retry_after(gate):
    down_gate(gate, free_port())
    for path in ["/api/chat", "/v1/chat/completions", "/v1/messages"]:
        gate.stop()
        gate.start()  # limit_req starts afresh: the first request passes it, the next ones do not
        down = send(gate, "k-all", path, {"model": "gemma3", "messages": CHAT})
        assert down.status == 502, (path, down)
        assert down.header("Content-Type").startswith("application/json")
        assert down.error_message(path) == "bad gateway: Ollama is not answering"
        assert down.header("Retry-After") == "5"
        assert b"nginx" not in down.body and "<html>" not in down.body.decode()
        send(gate, "k-all", path, {"model": "gemma3"})  # the burst
        limited = send(gate, "k-all", path, {"model": "gemma3"})
        assert limited.status == 429 and limited.error_message(path) == "rate limited: too many requests; retry later"
        assert limited.header("Retry-After") == "1"
    # Counted per status code, under the key that was refused.
    metrics = settled(gate, lambda m: m.total(REQUESTS, user="admin", code="429") >= 1)
    assert metrics.total(REQUESTS, user="admin", code="502") >= 1
    assert metrics.total(REQUESTS, user="admin", code="429") >= 1
    # Without the directive, and with an error_page of the location's own, nginx's pages stay.
    plain = send(gate, "k-all", "/plain/api/chat", {"model": "gemma3"})
    assert plain.status == 502 and b"<html>" in plain.body
    own = send(gate, "k-all", "/own/api/chat", {"model": "gemma3"})
    assert own.status == 502 and own.body == b"our own page\n"


def test_the_client_libraries_read_nginx_s_own_errors(gate):
    down_gate(gate, free_port())
    with pytest.raises(openai.InternalServerError) as error:
        openai.OpenAI(base_url=base(gate, "/v1"), api_key="k-all", max_retries=0).models.list()
    assert "bad gateway: Ollama is not answering" in str(error.value)
    client = ollama_library.Client(host=base(gate), headers={"Authorization": "Bearer k-all"})
    with pytest.raises(ollama_library.ResponseError) as error:
        client.list()  # limit_req's burst
    assert error.value.status_code == 502 and "bad gateway: Ollama is not answering" in str(error.value)
    with pytest.raises(ollama_library.ResponseError) as error:
        client.list()
    assert error.value.status_code == 429 and "too many requests" in str(error.value)


def test_retry_after_and_reset_never_exceed_the_window_and_are_exact(gate):
    """requests=1/3s: the wait is at most 3 s, and a retry after Retry-After seconds passes."""
    start(gate, KEYS)
    for _ in range(2):
        time.sleep(random.uniform(0, 0.4))  # anywhere in a sub-interval
        assert send(gate, "k-lim").status == 200
        refused = send(gate, "k-lim")
        assert refused.status == 429
        retry = int(refused.header("Retry-After"))
        assert 1 <= retry <= 3, retry
        assert duration(refused.header("x-ratelimit-reset-requests")) <= 3
        time.sleep(retry)
        assert send(gate, "k-lim").status == 200, "admitted when Retry-After said"
        time.sleep(3.05)


class SlowTailOllama:
    """An upstream that streams a native answer whole, then holds the chunked terminator back
    for two seconds: a client may read the final `"done":true` and leave before the end."""

    FINAL = b'{"model":"gemma3:1b","response":"","done":true,"prompt_eval_count":5,"eval_count":2}\n'

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += conn.recv(65536)
            chunks = [b'{"model":"gemma3:1b","response":"Hi","done":false}\n',
                      b'{"model":"gemma3:1b","response":"!","done":false}\n', self.FINAL]
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                for chunk in chunks:
                    conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    if b'"Hi"' in chunk:
                        time.sleep(0.5)  # a client that leaves here leaves mid-answer
                time.sleep(2)
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass

    def close(self):
        self.listener.close()


def test_a_client_that_had_the_whole_answer_is_counted_200_not_499(gate):
    upstream = SlowTailOllama()
    try:
        start(gate, "k-c counted\n", proxy=f"proxy_pass http://127.0.0.1:{upstream.port};"
                                           "proxy_http_version 1.1; proxy_buffering off;")
        body = {"model": "gemma3:1b", "prompt": "x"}
        whole = open_stream(gate, "k-c", "/api/generate", body, {})
        read_until(whole, b'"done":true', 1)
        whole.close()
        cut = open_stream(gate, "k-c", "/api/generate", body, {})
        read_until(cut, b'"Hi"', 1)
        cut.close()
        metrics = settled(gate, lambda m: m.total(REQUESTS, user="counted") == 2, timeout=8)
        assert metrics.value(REQUESTS, user="counted", model="gemma3:1b", code="200") == 1
        assert metrics.value(REQUESTS, user="counted", model="gemma3:1b", code="499") == 1
    finally:
        upstream.close()


def test_the_state_file_is_for_its_owner_only(gate):
    state = state_dir(gate) / "limits.state"
    start(gate, "k-s s requests=3/1m\n", state=state)
    assert send(gate, "k-s").status == 200
    gate.stop()
    mode = stat.S_IMODE(state.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert state.stat().st_uid == pwd.getpwnam("nobody").pw_uid, "written by the workers"
    # One that others may write is read, with a warning, and replaced by one they may not.
    os.chmod(state, 0o666)
    gate.start()
    assert "is writable by other users" in gate.error_log()
    assert send(gate, "k-s").header("x-ratelimit-remaining-requests") == "1", "the counts were read back"
    gate.stop()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_nginx_t_names_a_bad_default_scope(gate):
    gate.write("keys.txt", KEYS)
    gate.configure("""
        location / {
            ollama_bearer_keys_file keys.txt;
            ollama_auth_default_scopes read,inference;
        }
    """)
    code, output = gate.test_config()
    assert code != 0
    assert 'invalid "ollama_auth_default_scopes" value "read,inference": "inference" is not one of' in output
    assert "nginx.conf" in output


def test_a_prefix_location_without_the_prefix_directive_is_warned_of_and_hinted(gate, ollama):
    gate.write("keys.txt", "k-chat chatter scopes=read,infer\n")
    gate.configure(f"""
        location /ollama/ {{
            ollama_bearer_keys_file keys.txt;
            proxy_pass http://{{upstream}}/;
        }}
        location /api/ {{
            ollama_bearer_keys_file keys.txt;
            proxy_pass http://{{upstream}};
        }}
        location = /healthz {{ return 200 "ok"; }}
    """)
    code, output = gate.test_config()
    assert code == 0, output
    warnings = [line for line in output.splitlines() if "ollama_auth_path_prefix" in line]
    assert len(warnings) == 1 and 'location "/ollama/"' in warnings[0] and "[warn]" in warnings[0], output
    gate.start()
    refused = send(gate, "k-chat", "/ollama/api/tags", None, method="GET")
    assert refused.status == 403
    wait_until(lambda: "needs \"ollama_auth_path_prefix\"" in gate.error_log(), 2)
    line = next(l for l in gate.error_log().splitlines() if "refused with 403" in l)
    assert 'needs "ollama_auth_path_prefix"' in line and "k-chat" not in line


def make(*args, env, timeout=600):
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_make_run_starts_the_gate_and_the_stand_in_with_a_clean_home_and_no_pip(tmp_path):
    """The newcomer's command, with Debian's own Python (PEP 668: any pip install fails) and an
    empty HOME: it builds nothing new here, installs nothing with pip, starts a stand-in where no
    Ollama answers, prints what comes next, and `make stop` stops exactly what it started."""
    home, run_dir = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    port, ollama_port = free_port(), free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(home),
           "CARGO_HOME": os.environ.get("CARGO_HOME", str(Path.home() / ".cargo")),
           "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup"))}
    settings = [f"PORT={port}", f"OLLAMA=127.0.0.1:{ollama_port}", f"RUN_DIR={run_dir}", "PYTHON=/usr/bin/python3"]
    try:
        started = make("run", *settings, env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        out = started.stdout
        assert "started the stand-in Ollama (tests/fake_ollama.py)" in out, out
        assert f"http://127.0.0.1:{port}" in out and "/metrics -H 'Authorization: Bearer admin-key-abcdef'" in out
        assert f"export OLLAMA_AUTH_KEYS={run_dir}/auth/api_keys.txt" in out
        assert list(home.iterdir()) == [], "nothing written to HOME (no pip --user, no caches)"
        tags = json.loads(subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/api/tags", "-H",
                                          "Authorization: Bearer my-secret-api-key-1"],
                                         capture_output=True, text=True, timeout=10).stdout)
        assert tags["models"], tags
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/metrics", "-H",
                                  "Authorization: Bearer admin-key-abcdef"], capture_output=True, text=True, timeout=10)
        assert "ollama_auth_requests_total" in metrics.stdout
        stopped = make("stop", *settings, env=env)
        assert stopped.returncode == 0 and stopped.stdout.strip() == "the gate and the stand-in Ollama stopped", stopped
        assert wait_until(lambda: not port_open(port) and not port_open(ollama_port), 5)
        again = make("stop", *settings, env=env)
        assert again.returncode == 0 and again.stdout.strip().splitlines() == [
            "nothing to stop: make run has no gate running"], again
        assert again.stderr == ""
    finally:
        make("stop", *settings, env=env, timeout=60)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_each_client_library_shows_the_message_of_a_413_and_a_503(gate):
    """nginx's own 413 (client_max_body_size) and a 503 (limit_req's default status), answered
    in the endpoint's shape: each library's exception carries the message."""
    gate.write("keys.txt", KEYS)
    gate.configure("""
        location / {
            ollama_bearer_keys_file keys.txt;
            ollama_auth_json_errors on;
            client_max_body_size 2k;
            limit_req zone=one nodelay;
            proxy_pass http://{upstream};
        }
    """, http_extra="limit_req_zone $ollama_auth_user zone=one:1m rate=1r/m; "
                    "ollama_auth_zone lim 1m; ollama_auth_usage lim;")
    gate.start()
    big = [{"role": "user", "content": "x" * 4000}]
    sdk = openai.OpenAI(base_url=base(gate, "/v1"), api_key="k-all", max_retries=0)
    claude = anthropic.Anthropic(base_url=base(gate), auth_token="k-all", max_retries=0)
    native = ollama_library.Client(host=base(gate), headers={"Authorization": "Bearer k-all"})
    too_large = "request entity too large: the request body is larger than this server accepts"
    for call in [lambda: sdk.chat.completions.create(model="gemma3:1b", messages=big),
                 lambda: claude.messages.create(model="gemma3:1b", max_tokens=5, messages=big),
                 lambda: native.chat(model="gemma3:1b", messages=big)]:
        with pytest.raises(Exception) as error:
            call()
        assert getattr(error.value, "status_code", None) == 413 and too_large in str(error.value), error.value
    assert native.chat(model="gemma3:1b", messages=CHAT).message.content  # limit_req's one a minute
    busy = "service unavailable: Ollama cannot take the request now; retry later"
    for call in [lambda: sdk.chat.completions.create(model="gemma3:1b", messages=CHAT),
                 lambda: claude.messages.create(model="gemma3:1b", max_tokens=5, messages=CHAT),
                 lambda: native.chat(model="gemma3:1b", messages=CHAT)]:
        with pytest.raises(Exception) as error:
            call()
        assert getattr(error.value, "status_code", None) == 503 and busy in str(error.value), error.value


def test_json_errors_live_beside_a_stock_error_page(gate):
    """nginx's stock `error_page 500 502 503 504 /50x.html` at server level: its pages stay for
    their statuses, and limit_req's 429 (no page of its own) is still answered in JSON."""
    gate.write("keys.txt", KEYS)
    gate.configure(f"""
        error_page 500 502 503 504 /50x.html;
        location = /50x.html {{ }}
        location / {{
            ollama_bearer_keys_file keys.txt;
            ollama_auth_json_errors on;
            limit_req zone=per_user burst=1 nodelay;
            limit_req_status 429;
            proxy_pass http://127.0.0.1:{free_port()};
        }}
    """, http_extra="ollama_auth_zone lim 1m; ollama_auth_usage lim; "
                    "limit_req_zone $ollama_auth_user zone=per_user:1m rate=1r/m;")
    gate.write("html/50x.html", "the operator's page\n")
    gate.start()
    down = send(gate, "k-all", "/api/chat", {"model": "gemma3"})
    assert down.status == 502 and down.body == b"the operator's page\n", down
    send(gate, "k-all", "/api/chat", {"model": "gemma3"})
    limited = send(gate, "k-all", "/v1/chat/completions", {"model": "gemma3"})
    assert limited.status == 429 and limited.header("Retry-After") == "1", limited
    assert limited.error_message("/v1/chat/completions") == "rate limited: too many requests; retry later"
