"""Usage accounting (issue 11), end to end: real nginx, real HTTP, the stand-in Ollama writing each
answer shape as Ollama does, with the counts it was told to put in (X-Fake-* headers, see
fake_ollama.py). The counts are read back from the access log ($ollama_* variables) and from the
Prometheus exposition, parsed by prometheus_client's own parser.

Counters change in the log phase, which may run just after the client has its last byte: reads of
the metrics poll (`settled`) until what a test waits for is there, then assert exact values."""

import hashlib
import http.client
import json
import math
import re
import socket
import threading
import time
from collections import Counter, defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_until, zstd_frame
from test_basic import basic, htpasswd_line
from test_bearer import PROXY, bearer

MODEL = "gemma3:1b"  # what the stand-in's answers name unless told otherwise
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUESTS = "ollama_auth_requests_total"
PROMPT = "ollama_auth_prompt_tokens_total"
COMPLETION = "ollama_auth_completion_tokens_total"
ESTIMATED = "ollama_auth_estimated_tokens_total"
REFUSED = "ollama_auth_refused_total"
DURATION = "ollama_auth_request_duration_seconds"
BUCKETS = ["0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "120", "300", "+Inf"]
FAMILIES = {  # as the parser names them (a counter loses _total) -> type, labels
    "ollama_auth_requests": ("counter", {"user", "model", "code"}),
    "ollama_auth_prompt_tokens": ("counter", {"user", "model"}),
    "ollama_auth_completion_tokens": ("counter", {"user", "model"}),
    "ollama_auth_estimated_tokens": ("counter", {"user", "model"}),
    "ollama_auth_slot_seconds": ("counter", {"user", "model"}),
    "ollama_auth_refused": ("counter", {"reason"}),
    DURATION: ("histogram", {"model"}),
}

UNNAMED = "k-unnamed-0123456789"
FINGERPRINT = "sha256:" + hashlib.sha256(UNNAMED.encode()).hexdigest()[:12]
ODD_NAME = 'Jürgen "J" O\\Brien'  # a label value the exposition must escape
KEYS = f"""\
k-alice alice
k-bob bob
{UNNAMED}
k-odd {ODD_NAME}
k-admin admin scopes=all
k-read reader scopes=read
k-gemma gemma-only models=gemma3*
k-old old expires=2001-01-01
k-once once requests=1/1m
"""
LOG_FORMAT = ("log_format usage escape=json "
              "'$ollama_auth_user|$ollama_model|$ollama_prompt_tokens|$ollama_completion_tokens|$status|$uri|$pid';")

_users = None


def users():
    global _users
    if _users is None:
        _users = htpasswd_line("-m", "carol", "carol-pw") + "\n"
    return _users


def start(gate, workers=1, keys=KEYS, location_extra="", server_extra="", http_extra="", proxy=PROXY,
          zone="ollama_auth_zone usage 1m;"):
    """One gated location counting into zone `usage`, and /metrics for 127.0.0.1."""
    gate.write("keys.txt", keys)
    gate.write("users.htpasswd", users())
    gate.configure(f"""
        {server_extra}
        location / {{
            ollama_bearer_keys_file keys.txt;
            ollama_basic_user_file users.htpasswd;
            ollama_auth_usage usage;
            {location_extra}
            {proxy}
        }}
        location = /metrics {{
            ollama_auth_metrics usage;
            allow 127.0.0.1;
            deny all;
        }}
    """, http_extra=f"{zone} {LOG_FORMAT} access_log {{dir}}/usage.log usage; {http_extra}", workers=workers)
    return gate.start()


def credentials(who):
    if who is None:
        return {}
    if isinstance(who, dict):
        return dict(who)
    return bearer(who)


def post(gate, who, path, body, steer=None, method="POST", timeout=30):
    """A request as `who` (a key, a headers dict, or None), with X-Fake-* headers from `steer`."""
    headers = credentials(who)
    headers.update({f"X-Fake-{name}": str(value) for name, value in (steer or {}).items()})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    return gate.request(path, method=method, headers=headers, body=body, timeout=timeout)


def direct(ollama, path, body, steer=None):
    """The same request straight to the stand-in: what a client without the gate gets."""
    connection = http.client.HTTPConnection("127.0.0.1", ollama.port, timeout=30)
    try:
        headers = {f"X-Fake-{name}": str(value) for name, value in (steer or {}).items()}
        headers["Content-Type"] = "application/json"
        connection.request("POST", path, body=json.dumps(body), headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


# ----- the exposition -----

class Metrics:
    def __init__(self, text):
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples = [s for f in self.families for s in f.samples]
        check_structure(self)

    def value(self, name, **labels):
        """The value of the sample with exactly these labels; 0 when there is none."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, f"{name} {labels} given {len(found)} times"
        return found[0] if found else 0

    def series(self, name, **match):
        """(labels, value) of every sample of `name` whose labels include `match`."""
        return [(s.labels, s.value) for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in match.items())]

    def total(self, name, **match):
        return sum(value for _, value in self.series(name, **match))

    def bucket(self, model, le):
        return self.value(f"{DURATION}_bucket", model=model, le=le)


def check_structure(metrics):
    """What the parser does not check: the families, their types and labels, no duplicate series,
    counters as integers, histograms with the documented buckets, cumulative, +Inf == _count."""
    names = [f.name for f in metrics.families]
    assert len(names) == len(set(names)), f"a family written in two groups: {names}"
    for family in metrics.families:
        assert family.name in FAMILIES, f"unexpected family {family.name}"
        kind, labels = FAMILIES[family.name]
        assert family.type == kind, (family.name, family.type)
        seen = set()
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in seen, f"duplicate series {key}"
            seen.add(key)
            assert math.isfinite(sample.value) and sample.value >= 0, sample
            own = set(sample.labels) - {"le"}
            assert own == labels, f"{sample.name}: labels {sorted(sample.labels)}"
            if not sample.name.endswith("_sum") and not sample.name.startswith("ollama_auth_slot_seconds"):
                assert sample.value == int(sample.value), sample
    for family in metrics.families:
        if family.type != "histogram":
            continue
        by_model = defaultdict(dict)
        for sample in family.samples:
            model = sample.labels["model"]
            by_model[model][(sample.name[len(family.name):], sample.labels.get("le"))] = sample.value
        for model, parts in by_model.items():
            les = [le for (part, le) in parts if part == "_bucket"]
            assert les == BUCKETS, f"buckets of {model!r}: {les}"
            values = [parts[("_bucket", le)] for le in BUCKETS]
            assert values == sorted(values), f"buckets of {model!r} not cumulative: {values}"
            assert parts[("_count", None)] == values[-1], (model, parts)
            assert ("_sum", None) in parts


def scrape(gate, headers=None):
    response = gate.request("/metrics", headers=headers)
    assert response.status == 200, response
    assert response.header("Content-Type") == CONTENT_TYPE
    return Metrics(response.body.decode("utf-8"))


def settled(gate, check, timeout=5, headers=None):
    """Scrapes until check(metrics) holds or the timeout passes; the last scrape."""
    last = None

    def look():
        nonlocal last
        last = scrape(gate, headers)
        return check(last)
    wait_until(look, timeout, 0.05)
    return last


def usage_log(gate):
    """The access log in LOG_FORMAT: lists of user, model, prompt, completion, status, uri, pid."""
    try:
        text = gate.path("usage.log").read_text()
    except FileNotFoundError:
        return []
    return [line.split("|") for line in text.splitlines()]


def logged(gate, uri, count=1):
    """The log lines of `uri`, once there are `count` of them."""
    lines = wait_until(lambda: [l for l in usage_log(gate) if l[5] == uri][:count]
                       if len([l for l in usage_log(gate) if l[5] == uri]) >= count else None, 5)
    assert lines, f"no log line for {uri}: {usage_log(gate)}"
    return lines


# ----- streaming by hand, to stop reading half way -----

def open_stream(gate, who, path, body, steer):
    """Sends the request on a socket and returns it, with what came so far."""
    sock = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
    data = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in credentials(who).items()]
    head += [f"X-Fake-{k}: {v}" for k, v in steer.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    return sock


def read_until(sock, marker, count):
    """Reads until `marker` was seen `count` times; what was read."""
    got = b""
    while got.count(marker) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {got[-300:]!r}"
        got += chunk
    return got


# ===================================================================== the exposition itself

def test_exposition_is_prometheus_text_with_every_family(gate):
    start(gate)
    empty = scrape(gate)
    assert empty.total(REQUESTS) == 0
    post(gate, "k-alice", "/api/generate", {"model": "gemma3", "prompt": "x", "stream": False})
    post(gate, None, "/api/tags", None, method="GET")
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 1 and m.total(REFUSED) >= 1)
    assert {f.name for f in metrics.families} == set(FAMILIES), metrics.text
    for family, (kind, _) in FAMILIES.items():
        assert re.search(rf"^# HELP {family}(_total)? \S", metrics.text, re.M), family
        assert re.search(rf"^# TYPE {family}(_total)? {kind}$", metrics.text, re.M), family
    assert metrics.text.endswith("\n")
    assert metrics.value(REQUESTS, user="alice", model=MODEL, code="200") == 1
    assert metrics.value(REFUSED, reason="no_credential") == 1
    assert metrics.value(f"{DURATION}_count", model=MODEL) == 1


def start_gated_metrics(gate, keys=KEYS):
    """Accounting on for the whole server, /metrics behind the same keys file (scopes=all)."""
    gate.write("keys.txt", keys)
    gate.configure(f"""
        ollama_bearer_keys_file keys.txt;
        ollama_auth_usage usage;
        location / {{ {PROXY} }}
        location = /metrics {{ ollama_auth_metrics usage; }}
    """, http_extra="ollama_auth_zone usage 1m;")
    return gate.start()


def test_metrics_location_is_gated_like_any_other_and_a_scrape_is_not_counted(gate):
    start_gated_metrics(gate)
    assert gate.request("/metrics").status == 401
    assert gate.request("/metrics", headers=bearer("k-alice")).status == 403
    assert post(gate, "k-alice", "/api/chat", {"model": "gemma3", "messages": [], "stream": False}).status == 200
    admin = bearer("k-admin")
    for _ in range(3):
        scrape(gate, admin)
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 1 and m.total(REFUSED) >= 2, headers=admin)
    assert metrics.series(REQUESTS, user="admin") == [], "a scrape was counted"
    assert metrics.total(REQUESTS) == 1
    assert metrics.value(REFUSED, reason="no_credential") == 1
    assert metrics.value(REFUSED, reason="forbidden_scope") == 1
    assert metrics.value(f"{DURATION}_count", model="") == 0


# ===================================================================== native answers

@pytest.mark.parametrize("path,stream", [("/api/generate", True), ("/api/generate", False),
                                         ("/api/chat", True), ("/api/chat", False)])
def test_native_answers_streamed_and_whole(gate, path, stream):
    start(gate)
    body = {"model": "gemma3", "stream": stream}
    body.update({"prompt": "sky?"} if path == "/api/generate" else {"messages": [{"role": "user", "content": "sky?"}]})
    response = post(gate, "k-alice", path, body, {"Prompt-Tokens": 23, "Words": 12, "Delay": 0.005})
    assert response.status == 200, response
    if stream:
        lines = [json.loads(line) for line in response.body.splitlines()]
        assert len(lines) == 13 and lines[-1]["eval_count"] == 12 and lines[-1]["prompt_eval_count"] == 23
    else:
        assert response.json()["eval_count"] == 12
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 1)
    # The model as the answer names it ("gemma3:1b"), not as the request did ("gemma3").
    assert metrics.series(REQUESTS) == [({"user": "alice", "model": MODEL, "code": "200"}, 1)]
    assert metrics.value(PROMPT, user="alice", model=MODEL) == 23
    assert metrics.value(COMPLETION, user="alice", model=MODEL) == 12
    assert metrics.value(f"{DURATION}_count", model=MODEL) == 1
    assert logged(gate, path)[0][:5] == ["alice", MODEL, "23", "12", "200"]


def test_native_counts_add_up_per_user_and_model(gate):
    start(gate)
    chat = {"model": "gemma3", "messages": [], "stream": False}
    post(gate, "k-alice", "/api/chat", chat, {"Prompt-Tokens": 5, "Words": 2})
    post(gate, "k-alice", "/api/chat", dict(chat, stream=True), {"Prompt-Tokens": 6, "Words": 3, "Delay": 0})
    post(gate, "k-alice", "/api/chat", chat, {"Prompt-Tokens": 100, "Words": 1, "Model": "qwen3:4b"})
    post(gate, "k-bob", "/api/generate", {"model": "gemma3", "prompt": "x"}, {"Prompt-Tokens": 7, "Words": 4, "Delay": 0})
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 4)
    assert metrics.value(REQUESTS, user="alice", model=MODEL, code="200") == 2
    assert metrics.value(REQUESTS, user="alice", model="qwen3:4b", code="200") == 1
    assert metrics.value(REQUESTS, user="bob", model=MODEL, code="200") == 1
    assert metrics.value(PROMPT, user="alice", model=MODEL) == 11
    assert metrics.value(COMPLETION, user="alice", model=MODEL) == 5
    assert metrics.value(PROMPT, user="alice", model="qwen3:4b") == 100
    assert metrics.value(COMPLETION, user="alice", model="qwen3:4b") == 1
    assert metrics.value(PROMPT, user="bob", model=MODEL) == 7
    assert metrics.value(COMPLETION, user="bob", model=MODEL) == 4
    assert metrics.value(f"{DURATION}_count", model=MODEL) == 3
    assert metrics.value(f"{DURATION}_count", model="qwen3:4b") == 1


def test_embed_count_after_megabytes_of_vectors(gate):
    start(gate)
    body = {"model": "nomic-embed-text", "input": ["a", "b", "c"]}
    steer = {"Prompt-Tokens": 41, "Embed-Bytes": 6_000_000, "Model": "nomic-embed-text:latest"}
    response = post(gate, "k-bob", "/api/embed", body, steer)
    assert response.status == 200 and len(response.body) > 6_000_000
    answer = response.json()
    assert answer["prompt_eval_count"] == 41 and len(answer["embeddings"]) >= 600
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 1)
    assert metrics.value(REQUESTS, user="bob", model="nomic-embed-text:latest", code="200") == 1
    assert metrics.value(PROMPT, user="bob", model="nomic-embed-text:latest") == 41
    assert metrics.value(COMPLETION, user="bob", model="nomic-embed-text:latest") == 0
    user, model, prompt, _, status = logged(gate, "/api/embed")[0][:5]
    assert (user, model, prompt, status) == ("bob", "nomic-embed-text:latest", "41", "200")


# ===================================================================== OpenAI- and Anthropic-shaped

@pytest.mark.parametrize("path,body,prompt,completion", [
    ("/v1/chat/completions", {"model": "gemma3", "messages": [{"role": "user", "content": "x"}]}, 19, 13),
    ("/v1/completions", {"model": "gemma3", "prompt": "once"}, 17, 11),
    ("/v1/embeddings", {"model": "gemma3", "input": "x"}, 9, 0),
    ("/v1/messages", {"model": "gemma3", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}, 29, 4),
])
def test_openai_and_anthropic_whole_answers(gate, path, body, prompt, completion):
    start(gate)
    response = post(gate, "k-bob", path, body, {"Prompt-Tokens": prompt, "Words": 4, "Eval-Count": completion})
    assert response.status == 200, response
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 1)
    assert metrics.series(REQUESTS) == [({"user": "bob", "model": MODEL, "code": "200"}, 1)]
    assert metrics.value(PROMPT, user="bob", model=MODEL) == prompt
    assert metrics.value(COMPLETION, user="bob", model=MODEL) == completion
    line = logged(gate, path)[0]
    assert line[:3] == ["bob", MODEL, str(prompt)] and line[4] == "200"
    if completion:
        assert line[3] == str(completion)


CHAT = {"model": "gemma3", "messages": [{"role": "user", "content": "sky?"}], "stream": True}
COMPLETE = {"model": "gemma3", "prompt": "Once", "stream": True}


def resident_mb(pid):
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


@pytest.mark.parametrize("buffering", ["off", "on"])
def test_a_client_that_reads_slowly_holds_ollama_back_not_the_worker_s_memory(gate, ollama, buffering):
    """The gate asked for usage and takes it back out of the stream in buffers of its own. A client
    that reads nothing for a while must hold the answer back, as it would without the gate (nginx's
    back-pressure: the upstream's buffer is not reused until what came from it is sent), not make
    the worker copy the whole stream into memory as fast as Ollama writes it. Then it reads all.
    With `proxy_buffering on`, nginx's own buffers and temporary file take what the client has not."""
    start(gate, proxy=PROXY.replace("proxy_buffering off;", f"proxy_buffering {buffering};"))
    events = 30_000  # about 6 MB of events: copied a pool buffer each, over 100 MB
    body = json.dumps(CHAT).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k-bob\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nX-Fake-Words: {events}\r\n"
            f"X-Fake-Delay: 0\r\nConnection: close\r\n\r\n").encode()
    worker = gate.worker_pids()[0]
    before = resident_mb(worker)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", gate.port))
    client.sendall(head + body)
    peak = before
    deadline = time.time() + 4  # the stand-in writes the whole stream in about a second
    while time.time() < deadline:
        peak = max(peak, resident_mb(worker))
        time.sleep(0.05)
    client.settimeout(30)
    received = bytearray()
    while chunk := client.recv(1 << 16):
        received += chunk
    client.close()
    head, _, chunked = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower(), head
    stream = bytearray()
    while True:
        size_line, _, chunked = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        stream += chunked[:size]
        chunked = chunked[size + 2:]
    assert stream.count(b"data: {") == events + 1, "every chunk and the last one, nothing lost"
    assert b"usage" not in stream and stream.endswith(b"data: [DONE]\n\n")
    assert peak - before < 8, f"the worker grew {peak - before:.1f} MB while the client read nothing"


@pytest.mark.parametrize("path,body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETE)],
                         ids=["chat", "completions"])
@pytest.mark.parametrize("asked", [True, False], ids=["include_usage", "not_asked"])
def test_openai_streams_count_exactly_and_the_client_gets_ollama_s_bytes(gate, ollama, path, body, asked):
    """Asked for: the usage event reaches the client, as from Ollama. Not asked for: the gate asks
    Ollama, counts, and takes out what asking added, so the client gets the bytes of an ungated run."""
    start(gate)
    if asked:
        body = dict(body, stream_options={"include_usage": True})
    # eval_count differs from the chunks: the count must come from the usage, not the chunks.
    steer = {"Prompt-Tokens": 31, "Words": 5, "Eval-Count": 17, "Delay": 0.005}
    before = len(ollama.seen)
    gated = post(gate, "k-bob", path, body, steer)
    assert gated.status == 200, gated
    forwarded = [seen for seen in ollama.seen[before:] if seen["path"] == path]
    assert len(forwarded) == 1
    assert json.loads(forwarded[0]["body"])["stream_options"] == {"include_usage": True}
    if asked:
        assert forwarded[0]["body"] == json.dumps(body).encode(), "a request that asked is passed on unchanged"
    status, content_type, ungated = direct(ollama, path, body, steer)
    assert (gated.status, gated.header("Content-Type")) == (status, content_type) == (200, "text/event-stream")
    assert gated.body == ungated, "the client-visible bytes differ from an ungated run"
    if asked:
        assert b'"choices":[],' in gated.body and b'"prompt_tokens":31,"completion_tokens":17' in gated.body
    else:
        assert b"usage" not in gated.body
    assert gated.body.endswith(b"data: [DONE]\n\n")
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 1)
    assert metrics.series(REQUESTS) == [({"user": "bob", "model": MODEL, "code": "200"}, 1)]
    assert metrics.value(PROMPT, user="bob", model=MODEL) == 31
    assert metrics.value(COMPLETION, user="bob", model=MODEL) == 17
    assert logged(gate, path)[0][:5] == ["bob", MODEL, "31", "17", "200"]


def test_openai_stream_rewrite_keeps_other_stream_options_and_a_false_include_usage(gate, ollama):
    start(gate)
    body = dict(CHAT, stream_options={"include_usage": False})
    steer = {"Prompt-Tokens": 8, "Words": 3, "Delay": 0}
    before = len(ollama.seen)
    gated = post(gate, "k-bob", "/v1/chat/completions", body, steer)
    forwarded = [seen for seen in ollama.seen[before:] if seen["path"] == "/v1/chat/completions"]
    assert json.loads(forwarded[0]["body"])["stream_options"] == {"include_usage": True}
    assert gated.body == direct(ollama, "/v1/chat/completions", body, steer)[2]
    assert b"usage" not in gated.body
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 1)
    assert (metrics.value(PROMPT, user="bob", model=MODEL), metrics.value(COMPLETION, user="bob", model=MODEL)) == (8, 3)


@pytest.mark.parametrize("path,body,marker", [
    ("/api/chat", {"model": "gemma3", "messages": []}, b'"done": false'),
    ("/v1/chat/completions", CHAT, b"data: "),
    ("/v1/completions", dict(COMPLETE, stream_options={"include_usage": True}), b"data: "),
    ("/v1/messages", {"model": "gemma3", "max_tokens": 9, "stream": True, "messages": []}, b"message_start"),
])
def test_streams_are_not_held_up_by_accounting(gate, path, body, marker):
    """Each chunk reaches the client as it comes: the first long before the last (0.15 s apart each)."""
    start(gate)
    began = time.monotonic()
    sock = open_stream(gate, "k-alice", path, body, {"Words": 4, "Delay": 0.15})
    read_until(sock, marker, 1)
    first = time.monotonic() - began
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
        if got.endswith(b"0\r\n\r\n"):
            break
    total = time.monotonic() - began
    sock.close()
    assert first < 0.15, f"the first chunk came after {first:.3f} s"
    assert total > 0.55, f"the whole answer took {total:.3f} s"


@pytest.mark.parametrize("estimate", [1, 500])
def test_anthropic_stream_counts_message_delta_not_the_estimate(gate, ollama, estimate):
    start(gate)
    body = {"model": "gemma3", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    steer = {"Prompt-Tokens": 29, "Estimate": estimate, "Words": 6, "Delay": 0.005}
    gated = post(gate, "k-alice", "/v1/messages", body, steer)
    assert gated.status == 200
    assert gated.body == direct(ollama, "/v1/messages", body, steer)[2]
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 1)
    assert metrics.value(REQUESTS, user="alice", model=MODEL, code="200") == 1
    assert metrics.value(PROMPT, user="alice", model=MODEL) == 29
    assert metrics.value(COMPLETION, user="alice", model=MODEL) == 6
    assert logged(gate, "/v1/messages")[0][:5] == ["alice", MODEL, "29", "6", "200"]


# ===================================================================== a client that goes away

@pytest.mark.parametrize("path,body,marker", [
    ("/api/generate", {"model": "gemma3", "prompt": "x"}, b'"done": false'),
    ("/api/chat", {"model": "gemma3", "messages": []}, b'"done": false'),
    ("/v1/chat/completions", CHAT, b'"finish_reason":null'),
    ("/v1/messages", {"model": "gemma3", "max_tokens": 99, "stream": True, "messages": []}, b'"text_delta"'),
])
def test_client_abort_mid_stream_counts_the_chunks_relayed_and_499(gate, ollama, path, body, marker):
    start(gate)
    total = 40
    sock = open_stream(gate, "k-alice", path, body, {"Prompt-Tokens": 5, "Words": total, "Delay": 0.05})
    got = read_until(sock, marker, 3)
    assert got.startswith(b"HTTP/1.1 200")
    sock.close()
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 1)
    assert metrics.series(REQUESTS) == [({"user": "alice", "model": MODEL, "code": "499"}, 1)]
    relayed = metrics.value(COMPLETION, user="alice", model=MODEL)
    assert 3 <= relayed < total, f"completion tokens counted: {relayed}"
    assert metrics.value(f"{DURATION}_count", model=MODEL) == 1
    user, model, _, completion, _, uri, _ = logged(gate, path)[0]
    assert (user, model, uri) == ("alice", MODEL, path)
    assert completion == str(int(relayed)), "the log and the metrics disagree"
    # The prompt's count never came (nor, for /v1/messages, more than Ollama's guess of 1): the
    # body's estimate is charged, never about nothing.
    estimate = (len(json.dumps(body)) + 3) // 4
    assert metrics.value(PROMPT, user="alice", model=MODEL) == estimate
    assert metrics.value(ESTIMATED, user="alice", model=MODEL) == estimate + relayed


# ===================================================================== who, which model, which code

def test_user_model_and_code_labels(gate):
    start(gate)
    whole = {"model": "gemma3", "prompt": "x", "stream": False}
    assert post(gate, "k-alice", "/api/generate", whole).status == 200
    assert post(gate, UNNAMED, "/api/generate", whole).status == 200
    assert post(gate, basic("carol", "carol-pw"), "/api/generate", whole).status == 200
    assert post(gate, "k-odd", "/api/generate", whole).status == 200
    assert gate.request("/api/tags", headers=bearer("k-admin")).status == 200            # names no model
    assert gate.request("/upstream-401", headers=bearer("k-admin")).status == 401        # Ollama's own 401
    assert post(gate, "k-bob", "/api/generate", whole, {"Status": 500}).status == 500    # Ollama's error
    assert post(gate, "k-bob", "/api/nothing-here", {}, method="POST").status == 403     # the gate's refusal
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 7)
    assert sorted((tuple(sorted(labels.items())), value) for labels, value in metrics.series(REQUESTS)) == sorted([
        ((("code", "200"), ("model", MODEL), ("user", "alice")), 1),
        ((("code", "200"), ("model", MODEL), ("user", FINGERPRINT)), 1),
        ((("code", "200"), ("model", MODEL), ("user", "carol")), 1),
        ((("code", "200"), ("model", MODEL), ("user", ODD_NAME)), 1),
        ((("code", "200"), ("model", ""), ("user", "admin")), 1),
        ((("code", "401"), ("model", ""), ("user", "admin")), 1),
        ((("code", "500"), ("model", ""), ("user", "bob")), 1),
    ]), metrics.text
    assert "k-alice" not in metrics.text and UNNAMED not in metrics.text and "carol-pw" not in metrics.text
    # Token series only where a model answered: none for the listing and the errors.
    for family in [PROMPT, COMPLETION]:
        assert sorted(labels["user"] for labels, _ in metrics.series(family)) == sorted(
            ["alice", FINGERPRINT, "carol", ODD_NAME]), metrics.text
        assert metrics.series(family, model="") == [], metrics.text
    assert metrics.value(REFUSED, reason="forbidden_scope") == 1
    # The log: no counts, and no model, where the answer had none.
    lines = {(l[0], l[5]): l for l in usage_log(gate)}
    assert lines[("admin", "/api/tags")][1:5] == ["", "", "", "200"]
    assert lines[("bob", "/api/generate")][1:5] == ["", "", "", "500"]
    assert lines[(FINGERPRINT, "/api/generate")][1:5] == [MODEL, "7", "9", "200"]


def test_refusals_count_by_reason_and_only_there(gate, ollama):
    start(gate, location_extra="client_max_body_size 100m;")
    chat = {"model": "gemma3", "messages": [], "stream": False}
    cases = [
        ("no_credential", None, chat, 401, 3),
        ("unknown_key", bearer("k-nobody"), chat, 401, 2),
        ("wrong_password", basic("carol", "wrong"), chat, 401, 1),
        ("unknown_user", basic("dave", "carol-pw"), chat, 401, 1),
        ("malformed_credential", {"Authorization": "Basic %%%not-base64%%%"}, chat, 401, 1),
        ("expired", bearer("k-old"), chat, 401, 1),
        ("forbidden_scope", bearer("k-read"), chat, 403, 2),
        ("forbidden_model", bearer("k-gemma"), dict(chat, model="llama3"), 403, 1),
        ("bad_request", bearer("k-gemma"), {"messages": []}, 400, 1),
    ]
    for reason, who, body, status, times in cases:
        for _ in range(times):
            response = post(gate, who, "/api/chat", body)
            assert response.status == status, (reason, response)
    # Over 64 MB from an entry limited to some models: the gate's 413.
    huge = b'{"model":"gemma3","messages":[],"x":"' + b"a" * (65 << 20) + b'"}'
    response = post(gate, "k-gemma", "/api/chat", huge, timeout=60)
    assert response.status == 413, response
    assert post(gate, "k-once", "/api/chat", chat).status == 200
    assert post(gate, "k-once", "/api/chat", chat).status == 429
    expected = {reason: times for reason, _, _, _, times in cases}
    expected.update(too_large=1, rate_limited=1)
    metrics = settled(gate, lambda m: m.total(REFUSED) >= sum(expected.values()) and m.total(REQUESTS) >= 1)
    assert {labels["reason"]: value for labels, value in metrics.series(REFUSED) if value} == expected
    # Only the one admitted request is in requests_total.
    assert metrics.series(REQUESTS) == [({"user": "once", "model": MODEL, "code": "200"}, 1)]


def test_duration_histogram(gate):
    start(gate)
    whole = {"model": "gemma3", "prompt": "x", "stream": False}
    post(gate, "k-alice", "/api/generate", whole)                      # a few milliseconds
    post(gate, "k-alice", "/api/generate", whole, {"Wait": 0.35})      # 0.35 s before the answer
    metrics = settled(gate, lambda m: m.value(f"{DURATION}_count", model=MODEL) >= 2)
    assert [metrics.bucket(MODEL, le) for le in BUCKETS] == [1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    assert metrics.value(f"{DURATION}_count", model=MODEL) == 2
    assert 0.35 <= metrics.value(f"{DURATION}_sum", model=MODEL) < 0.6


# ===================================================================== workers, concurrency, reload

SHAPES = [
    ("/api/generate", {"model": "gemma3", "prompt": "x"}),
    ("/api/chat", {"model": "gemma3", "messages": [], "stream": False}),
    ("/v1/chat/completions", CHAT),
    ("/v1/completions", dict(COMPLETE, stream_options={"include_usage": True})),
    ("/v1/messages", {"model": "gemma3", "max_tokens": 9, "stream": True, "messages": []}),
    ("/api/embed", {"model": "gemma3", "input": "x"}),
]


def test_two_workers_and_concurrent_clients_count_exactly(gate):
    start(gate, workers=2)
    expected = Counter()
    failures = []
    lock = threading.Lock()

    def client(number):
        user, key = ("alice", "k-alice") if number % 2 else ("bob", "k-bob")
        for i in range(12):
            path, body = SHAPES[(number + i) % len(SHAPES)]
            prompt, words = 3 + (number * 7 + i) % 11, 2 + i % 5
            response = post(gate, key, path, body, {"Prompt-Tokens": prompt, "Words": words, "Delay": 0.002})
            with lock:
                if response.status != 200:
                    failures.append((path, response))
                expected[(user, "requests")] += 1
                expected[(user, "prompt")] += prompt
                expected[(user, "completion")] += 0 if path == "/api/embed" else words

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 96)
    for user in ["alice", "bob"]:
        assert metrics.series(REQUESTS, user=user) == [({"user": user, "model": MODEL, "code": "200"}, 48)]
        assert metrics.value(PROMPT, user=user, model=MODEL) == expected[(user, "prompt")]
        assert metrics.value(COMPLETION, user=user, model=MODEL) == expected[(user, "completion")]
    assert metrics.value(f"{DURATION}_count", model=MODEL) == 96
    pids = {line[6] for line in usage_log(gate)}
    assert len(pids) == 2, f"the requests did not reach both workers: {pids}"
    # Every worker answers the scrape with the same counts.
    for _ in range(6):
        assert scrape(gate).value(REQUESTS, user="alice", model=MODEL, code="200") == 48


def test_counters_are_kept_across_nginx_reload(gate):
    start(gate, workers=2)
    whole = {"model": "gemma3", "prompt": "x", "stream": False}
    for _ in range(3):
        post(gate, "k-alice", "/api/generate", whole, {"Prompt-Tokens": 10, "Words": 2})
    post(gate, None, "/api/generate", whole)
    before = settled(gate, lambda m: m.total(REQUESTS) >= 3 and m.total(REFUSED) >= 1)
    assert before.value(REQUESTS, user="alice", model=MODEL, code="200") == 3
    gate.reload()
    after = scrape(gate)
    assert after.samples == before.samples
    post(gate, "k-alice", "/api/generate", whole, {"Prompt-Tokens": 10, "Words": 2})
    after = settled(gate, lambda m: m.total(REQUESTS) >= 4)
    assert after.value(REQUESTS, user="alice", model=MODEL, code="200") == 4
    assert after.value(PROMPT, user="alice", model=MODEL) == 40
    assert after.value(COMPLETION, user="alice", model=MODEL) == 8
    assert after.value(REFUSED, reason="no_credential") == 1
    # A reload that changes the configuration (a new location) keeps them too.
    start_conf = gate.path("nginx.conf").read_text().replace("location = /metrics", "location = /other { return 204; }\n        location = /metrics")
    gate.write("nginx.conf", start_conf)
    gate.reload()
    assert scrape(gate).value(REQUESTS, user="alice", model=MODEL, code="200") == 4


def test_a_location_without_ollama_auth_usage_counts_nothing(gate):
    gate.write("keys.txt", "k-alice alice\n")
    gate.configure(f"""
        location / {{ ollama_bearer_keys_file keys.txt; {PROXY} }}
        location = /metrics {{ ollama_auth_metrics usage; allow 127.0.0.1; deny all; }}
    """, http_extra=f"ollama_auth_zone usage 1m; {LOG_FORMAT} access_log {{dir}}/usage.log usage;")
    gate.start()
    assert post(gate, "k-alice", "/api/generate", {"model": "gemma3", "prompt": "x", "stream": False}).status == 200
    assert post(gate, "k-nobody", "/api/generate", {"model": "gemma3", "prompt": "x", "stream": False}).status == 401
    line = logged(gate, "/api/generate")[0]
    assert line[0] == "alice" and line[4] == "200"
    time.sleep(0.2)
    counted = [s for s in scrape(gate).samples if s.value]
    assert counted == [], counted


def test_a_full_zone_folds_new_series_into_other_and_warns_once(gate):
    """A 64k zone cannot hold 400 users' series: the ones that do not fit are counted as
    user="__other__", nothing is lost, the endpoint answers, one warning says so."""
    names = [f"user-{i:03}-" + "x" * 200 for i in range(400)]
    start(gate, keys="".join(f"k-{i:03} {name}\n" for i, name in enumerate(names)), workers=2,
          zone="ollama_auth_zone usage 64k;")
    whole = {"model": "gemma3", "prompt": "x", "stream": False}
    for i in range(400):
        assert post(gate, f"k-{i:03}", "/api/generate", whole, {"Prompt-Tokens": 2, "Words": 1}).status == 200
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 400)
    assert metrics.total(REQUESTS) == 400
    assert metrics.total(PROMPT) == 800 and metrics.total(COMPLETION) == 400
    users = {labels["user"] for labels, _ in metrics.series(REQUESTS)}
    assert "__other__" in users and len(users) < 400
    assert users - {"__other__"} <= set(names)
    assert metrics.total(REQUESTS, user="__other__") == 400 - (len(users) - 1)
    warnings = [line for line in gate.error_log().splitlines() if "[warn]" in line and "full" in line]
    assert len(warnings) == 1, warnings


# ----- no client can fill the zone (issue 18) -----

ZONE_KEYS = "k-flood flooder models=gemma3\nk-any anyone\n" + "".join(
    f"k-lim{i} limited-{i} requests=100/1m\n" for i in range(5))


def assert_limited_keys_still_admitted(gate):
    for i in range(5):
        response = post(gate, f"k-lim{i}", "/api/generate", {"model": "gemma3", "prompt": "x", "stream": False})
        assert response.status == 200, (i, response)


def test_model_spellings_are_one_series_and_cannot_fill_the_zone(gate):
    """Ollama trims the model it runs but echoes the name as sent: a key limited to gemma3 sending
    "gemma3" and ever more spaces made a series per spelling until limited keys got 503."""
    start(gate, keys=ZONE_KEYS, zone="ollama_auth_zone usage 128k;")
    for i in range(400):
        body = {"model": "gemma3" + " " * (i + 600), "prompt": "x", "stream": False}
        assert post(gate, "k-flood", "/api/generate", body, {"Model": "=request"}).status == 200, i
    assert_limited_keys_still_admitted(gate)
    metrics = settled(gate, lambda m: m.total(REQUESTS, user="flooder") >= 400)
    assert {labels["model"] for labels, _ in metrics.series(REQUESTS) if labels["user"] == "flooder"} == \
        {"gemma3:latest"}
    assert metrics.value(REQUESTS, user="flooder", model="gemma3:latest", code="200") == 400


def test_many_models_fill_at_most_half_the_zone(gate):
    """Distinct model names (each a real label) are capped by the bytes they take, not by a count
    that assumed short labels: the limit counters keep their half of the zone."""
    start(gate, keys=ZONE_KEYS, zone="ollama_auth_zone usage 128k;")
    for i in range(300):
        model = f"h{i}" + "x" * 340 + ".com/" + "n" * 80 + "/" + "m" * 80 + ":" + "t" * 80  # about 590 bytes
        body = {"model": "gemma3", "prompt": "x", "stream": False}
        assert post(gate, "k-any", "/api/generate", body, {"Model": model}).status == 200, i
    assert_limited_keys_still_admitted(gate)
    metrics = settled(gate, lambda m: m.total(REQUESTS) >= 305)
    assert metrics.total(REQUESTS) == 305, "every request is counted, folded or not"
    assert metrics.total(REQUESTS, user="__other__") > 0, "the series stopped at their share of the zone"
    # A series of a 590-byte label takes 1,280 bytes: half of 128k holds 51 at most.
    assert len({labels["model"] for labels, _ in metrics.series(REQUESTS)}) <= 52


def test_a_zstd_streamed_v1_body_is_counted(gate, ollama):
    """Ollama decodes zstd bodies on its /v1 POSTs: the gate decodes one too, adds include_usage,
    and sends the JSON on (Content-Encoding: identity), so the stream's tokens are counted."""
    start(gate)
    body = {"model": "gemma3", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Content-Type": "application/json", "Content-Encoding": "zstd", "X-Fake-Prompt-Tokens": "11"}
    headers.update(bearer("k-alice"))
    response = gate.request("/v1/chat/completions", method="POST", headers=headers,
                            body=zstd_frame(json.dumps(body).encode()))
    assert response.status == 200, response
    assert b'"usage"' not in response.body, "what the gate asked for is taken out"
    seen = ollama.seen[-1]
    assert seen["headers"]["Content-Encoding"] == "identity"
    assert json.loads(seen["body"])["stream_options"] == {"include_usage": True}
    metrics = settled(gate, lambda m: m.total(PROMPT, user="alice") >= 11)
    assert metrics.total(PROMPT, user="alice") == 11
    assert metrics.total(ESTIMATED, user="alice") == 0
