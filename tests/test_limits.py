"""Per-key limits (issue 12), end to end: requests=, tokens= and parallel= from the keys file (and the
htpasswd third field), counted in the shared zone across workers, the 429 and its headers, the
in-flight count after every way a request can end, hot reload of the limits, nginx -s reload, and
the state file. Short periods (3 s) keep the waits short."""

import json
import os
import re
import threading
import time

import pytest

from conftest import free_port, process_alive, wait_until
from test_basic import basic, htpasswd_line
from test_bearer import PROXY, bearer
from test_usage import COMPLETION, ESTIMATED, LOG_FORMAT, PROMPT, REFUSED, open_stream, read_until, settled, usage_log

MODEL = "gemma3:1b"
WHOLE = {"model": "gemma3", "prompt": "x", "stream": False}
HEADERS = ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
           "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]
RELOAD_WAIT = 1.1  # a keys file change counts for requests that start a second after it


def start(gate, keys, workers=1, users=None, state=None, location_extra="", server_extra="", proxy=PROXY):
    gate.write("keys.txt", keys)
    files = "ollama_bearer_keys_file keys.txt;"
    if users is not None:
        gate.write("users.htpasswd", users)
        files += " ollama_basic_user_file users.htpasswd;"
    zone = "ollama_auth_zone lim 1m" + (f" state={state}" if state else "") + ";"
    gate.configure(f"""
        {server_extra}
        location / {{
            {files}
            ollama_auth_usage lim;
            {location_extra}
            {proxy}
        }}
        location = /metrics {{ ollama_auth_metrics lim; allow 127.0.0.1; deny all; }}
    """, http_extra=f"{zone} {LOG_FORMAT} access_log {{dir}}/usage.log usage;", workers=workers)
    return gate.start()


def send(gate, who, path="/api/generate", body=WHOLE, steer=None, method="POST", timeout=30):
    headers = dict(who) if isinstance(who, dict) else bearer(who)
    headers.update({f"X-Fake-{k}": str(v) for k, v in (steer or {}).items()})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return gate.request(path, method=method, headers=headers, body=body, timeout=timeout)


def rate_headers(response):
    return {name: response.header(name) for name in HEADERS if response.header(name) is not None}


def duration(text):
    """Seconds in a reset value as OpenAI writes it: 500ms, 3s, 1m0s, 1h2m3s."""
    match = re.fullmatch(r"(\d+)ms|(?:(\d+)h)?(?:(\d+)m)?(\d+)s", text)
    assert match, f"not a duration: {text!r}"
    if match.group(1) is not None:
        return int(match.group(1)) / 1000
    hours, minutes, seconds = (int(g or 0) for g in match.groups()[1:])
    return hours * 3600 + minutes * 60 + seconds


def assert_rate_limited(response, limit, at_most):
    """A 429 naming `limit`, with a Retry-After of whole seconds from 1 to `at_most`; the seconds."""
    assert response.status == 429, response
    assert response.header("Content-Type").startswith("application/json")
    assert response.error_message() == f"rate limited: {limit}"
    retry = response.header("Retry-After")
    assert retry is not None and re.fullmatch(r"[1-9][0-9]*", retry), retry
    assert 1 <= int(retry) <= at_most, retry
    return int(retry)


def reached(ollama, before, tag):
    return [s for s in ollama.seen[before:] if s["headers"].get("X-Fake-Tag") == tag]


def edit_keys(gate, keys):
    gate.write("keys.txt", keys)
    time.sleep(RELOAD_WAIT)


# ===================================================================== requests=

def test_requests_limit_refuses_with_429_retry_after_and_recovers(gate, ollama):
    start(gate, "k-r3 r3 requests=3/3s\nk-free free\n")
    for i in range(3):
        response = send(gate, "k-r3")
        assert response.status == 200, response
        headers = rate_headers(response)
        assert set(headers) == set(HEADERS[:3]), headers
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-remaining-requests"] == str(2 - i)
        assert 0 < duration(headers["x-ratelimit-reset-requests"]) <= 4, headers
    before = len(ollama.seen)
    refused = send(gate, "k-r3", steer={"Tag": "refused"})
    retry = assert_rate_limited(refused, "requests 3/3s", 4)
    assert reached(ollama, before, "refused") == [], "a refused request reached Ollama"
    free = send(gate, "k-free")
    assert free.status == 200 and rate_headers(free) == {}, "headers for a key without limits"
    metrics = settled(gate, lambda m: m.value(REFUSED, reason="rate_limited") >= 1)
    assert metrics.value(REFUSED, reason="rate_limited") == 1
    assert metrics.value("ollama_auth_requests_total", user="r3", model=MODEL, code="200") == 3
    # Retry-After is enough: after it, the key is admitted again.
    time.sleep(retry + 0.1)
    again = send(gate, "k-r3")
    assert again.status == 200, f"still refused {retry} s after a Retry-After of {retry}: {again}"
    assert int(again.header("x-ratelimit-remaining-requests")) in (0, 1, 2)


def test_rate_limit_headers_only_for_the_kinds_a_key_has(gate):
    start(gate, "k-free free\nk-req req requests=10/1m\nk-tok tok tokens=1000/1m\n"
                "k-both both requests=10/1m,100/1h tokens=1000/1m\nk-par par parallel=3\n")
    assert rate_headers(send(gate, "k-free")) == {}
    assert rate_headers(send(gate, "k-par")) == {}
    req = rate_headers(send(gate, "k-req"))
    assert set(req) == set(HEADERS[:3])
    assert (req["x-ratelimit-limit-requests"], req["x-ratelimit-remaining-requests"]) == ("10", "9")
    assert 59 <= duration(req["x-ratelimit-reset-requests"]) <= 65, req
    assert re.fullmatch(r"1m\d+s", req["x-ratelimit-reset-requests"]), req
    tok = rate_headers(send(gate, "k-tok"))
    assert set(tok) == set(HEADERS[3:])
    # Remaining tokens count answers already finished: none yet, so nothing to reset.
    assert (tok["x-ratelimit-limit-tokens"], tok["x-ratelimit-remaining-tokens"]) == ("1000", "1000")
    duration(tok["x-ratelimit-reset-tokens"])
    both = rate_headers(send(gate, "k-both"))
    assert set(both) == set(HEADERS)
    # Several windows of one kind: the one with the least remaining (10/1m, not 100/1h).
    assert (both["x-ratelimit-limit-requests"], both["x-ratelimit-remaining-requests"]) == ("10", "9")


def test_requests_exact_with_two_workers_and_eight_clients(gate, ollama):
    start(gate, "k-100 hundred requests=100/1m\n", workers=2)
    results, lock = [], threading.Lock()
    before = len(ollama.seen)

    def client():
        for _ in range(18):
            response = send(gate, "k-100", "/api/tags", None, {"Tag": "exact"}, method="GET")
            with lock:
                results.append(response)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [r.status for r in results]
    assert statuses.count(200) == 100 and statuses.count(429) == 44, sorted(set(statuses))
    assert len(reached(ollama, before, "exact")) == 100
    # Each admitted request saw its own remaining count: 99 down to 0, each once.
    remaining = sorted(int(r.header("x-ratelimit-remaining-requests")) for r in results if r.status == 200)
    assert remaining == list(range(100))
    for refusal in (r for r in results if r.status == 429):
        assert refusal.json() == {"error": "rate limited: requests 100/1m"}
    pids = wait_until(lambda: len(usage_log(gate)) >= 144 and {l[6] for l in usage_log(gate) if l[4] == "200"}, 5)
    assert pids and len(pids) == 2, f"admitted requests did not come through both workers: {pids}"


# ===================================================================== tokens=

def test_tokens_limit_overshoots_once_then_refuses_then_recovers(gate):
    start(gate, "k-t50 t50 tokens=50/3s\n")
    # 10 prompt + 50 completion tokens: admitted (the budget is still whole), and it overshoots.
    first = send(gate, "k-t50", steer={"Prompt-Tokens": 10, "Words": 50})
    assert first.status == 200
    headers = rate_headers(first)
    assert set(headers) == set(HEADERS[3:]), headers
    assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"]) == ("50", "50")
    settled(gate, lambda m: m.value(PROMPT, user="t50", model=MODEL) >= 10)
    retry = assert_rate_limited(send(gate, "k-t50"), "tokens 50/3s", 4)
    time.sleep(retry + 0.1)
    # A streamed /v1 request that did not ask for usage: the gate's own count is charged.
    chat = {"model": "gemma3", "messages": [], "stream": True}
    third = send(gate, "k-t50", "/v1/chat/completions", chat, {"Prompt-Tokens": 4, "Words": 6, "Delay": 0})
    assert third.status == 200, f"refused after its Retry-After: {third}"
    assert third.header("x-ratelimit-remaining-tokens") == "50"
    assert b"usage" not in third.body
    settled(gate, lambda m: m.value(PROMPT, user="t50", model=MODEL) >= 14)
    fourth = send(gate, "k-t50", steer={"Prompt-Tokens": 1, "Words": 1})
    assert fourth.status == 200
    assert fourth.header("x-ratelimit-remaining-tokens") == "40"


def test_tokens_and_requests_together_name_the_limit_hit(gate):
    start(gate, "k-tr tr requests=5/3s tokens=30/3s\n")
    assert send(gate, "k-tr", steer={"Prompt-Tokens": 20, "Words": 15}).status == 200
    settled(gate, lambda m: m.value(PROMPT, user="tr", model=MODEL) >= 20)
    assert_rate_limited(send(gate, "k-tr"), "tokens 30/3s", 4)


# ===================================================================== parallel=

def slow_stream(steer_tag, words=10, delay=0.1):
    return {"Tag": steer_tag, "Words": words, "Delay": delay}


def test_parallel_limit_across_two_workers_seen_from_ollama(gate, ollama):
    start(gate, "k-p2 p2 parallel=2\n", workers=2)
    stream = {"model": "gemma3", "prompt": "x"}
    for wave in range(2):
        tag = f"parallel-{wave}"
        results, lock = [], threading.Lock()
        barrier = threading.Barrier(6)

        def client():
            barrier.wait()
            response = send(gate, "k-p2", body=stream, steer=slow_stream(tag))
            with lock:
                results.append(response)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert ollama.max_in_flight(tag) <= 2, f"Ollama saw {ollama.max_in_flight(tag)} requests of one key at once"
        statuses = sorted(r.status for r in results)
        assert statuses == [200, 200, 429, 429, 429, 429], statuses
        assert ollama.max_in_flight(tag) == 2
        for refusal in (r for r in results if r.status == 429):
            assert_rate_limited(refusal, "parallel 2", 1)
        for answer in (r for r in results if r.status == 200):
            assert len(answer.body.splitlines()) == 11
            assert rate_headers(answer) == {}
        # The second wave: once all have ended, two at once are admitted again.


def test_in_flight_released_after_client_abort(gate, ollama):
    start(gate, "k-p1 p1 parallel=1\n")
    sock = open_stream(gate, "k-p1", "/api/generate", {"model": "gemma3", "prompt": "x"},
                       {"Words": 60, "Delay": 0.1, "Tag": "aborted"})
    read_until(sock, b'"done": false', 2)
    assert_rate_limited(send(gate, "k-p1"), "parallel 1", 1)
    sock.close()
    aborted_at = time.monotonic()
    admitted = wait_until(lambda: send(gate, "k-p1").status == 200, 3)
    assert admitted, "the aborted request still holds its parallel slot"
    # Well before the stream would have ended (6 s): released on the abort, not at the end.
    assert time.monotonic() - aborted_at < 3
    assert send(gate, "k-p1").status == 200


def test_in_flight_released_after_upstream_502(gate):
    dead = free_port()  # nothing listens here: connection refused
    start(gate, "k-p1 p1 parallel=1\n", server_extra=f"""
        location /dead/ {{
            ollama_bearer_keys_file keys.txt;
            ollama_auth_usage lim;
            ollama_auth_path_prefix /dead;
            proxy_pass http://127.0.0.1:{dead}/;
        }}
    """)
    for _ in range(3):
        response = send(gate, "k-p1", "/dead/api/generate")
        assert response.status == 502, f"after a 502 the key is refused: {response}"
    assert send(gate, "k-p1").status == 200
    assert send(gate, "k-p1").status == 200


def test_in_flight_released_after_upstream_timeout_and_errors(gate):
    start(gate, "k-p1 p1 parallel=1\n", location_extra="proxy_read_timeout 300ms;")
    for _ in range(2):
        response = send(gate, "k-p1", steer={"Wait": 1})
        assert response.status == 504, f"after a timeout the key is refused: {response}"
    for status in (500, 404, 503):
        assert send(gate, "k-p1", steer={"Status": status}).status == status
    # A timeout in the middle of a stream, between two chunks: the answer is cut short.
    sock = open_stream(gate, "k-p1", "/api/generate", {"model": "gemma3", "prompt": "x"}, {"Words": 4, "Delay": 0.6})
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    sock.close()
    assert got.startswith(b"HTTP/1.1 200") and got.count(b'"done": false') < 4, got
    assert send(gate, "k-p1").status == 200
    assert send(gate, "k-p1").status == 200


def test_in_flight_released_after_gate_refusals_and_bad_requests(gate):
    """A request refused after admission by another check (a model the key may not use) or
    answered 400 leaves nothing in flight."""
    start(gate, "k-pm pm parallel=1 models=gemma3\n")
    for _ in range(2):
        assert send(gate, "k-pm", body=dict(WHOLE, model="llama3")).status == 403
        assert send(gate, "k-pm", body={"prompt": "x"}).status == 400
    assert send(gate, "k-pm").status == 200
    assert send(gate, "k-pm").status == 200


# ===================================================================== changes and reloads

def test_limits_follow_keys_file_edits_and_counters_survive(gate):
    start(gate, "k-e edit requests=3/1m\n")
    assert send(gate, "k-e").header("x-ratelimit-remaining-requests") == "2"
    assert send(gate, "k-e").header("x-ratelimit-remaining-requests") == "1"
    edit_keys(gate, "k-e edit requests=5/1m tokens=1000/1m\n")
    raised = send(gate, "k-e")
    assert raised.status == 200
    headers = rate_headers(raised)
    assert set(headers) == set(HEADERS), headers
    # The two requests before the change still count.
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("5", "2")
    edit_keys(gate, "k-e edit requests=3/1m\n")
    assert_rate_limited(send(gate, "k-e"), "requests 3/1m", 65)
    edit_keys(gate, "k-e edit\n")
    free = send(gate, "k-e")
    assert free.status == 200 and rate_headers(free) == {}


def test_counters_survive_nginx_reload(gate):
    start(gate, "k-r r requests=3/1m\nk-t t tokens=20/1m\n", workers=2)
    assert send(gate, "k-r").status == 200
    assert send(gate, "k-r").status == 200
    assert send(gate, "k-t", steer={"Prompt-Tokens": 15, "Words": 10}).status == 200
    settled(gate, lambda m: m.value(PROMPT, user="t", model=MODEL) >= 15)
    gate.reload()
    last = send(gate, "k-r")
    assert last.status == 200 and last.header("x-ratelimit-remaining-requests") == "0"
    assert_rate_limited(send(gate, "k-r"), "requests 3/1m", 65)
    assert_rate_limited(send(gate, "k-t"), "tokens 20/1m", 65)


def test_basic_user_limits_from_the_htpasswd_third_field(gate):
    users = htpasswd_line("-m", "carol", "pw") + ":requests=1/1m\n" + htpasswd_line("-m", "dave", "pw") + "\n"
    start(gate, "k-x x\n", users=users)
    first = send(gate, basic("carol", "pw"))
    assert first.status == 200 and first.header("x-ratelimit-remaining-requests") == "0"
    assert_rate_limited(send(gate, basic("carol", "pw")), "requests 1/1m", 65)
    assert send(gate, basic("dave", "pw")).status == 200


# ===================================================================== configuration

@pytest.mark.parametrize("zone", [True, False], ids=["zone_without_usage", "no_zone"])
def test_a_limit_in_a_location_without_usage_fails_nginx_t(gate, zone):
    gate.write("keys.txt", "k-a a\nk-b b requests=3/1m\n")
    gate.configure(f"location / {{ ollama_bearer_keys_file keys.txt; {PROXY} }}",
                   http_extra="ollama_auth_zone lim 1m;" if zone else "")
    rc, output = gate.test_config()
    assert rc != 0, output
    assert "[emerg]" in output and "ollama_auth_usage" in output, output
    assert "k-b" not in output
    # With the directive, it passes.
    gate.configure(f"location / {{ ollama_bearer_keys_file keys.txt; ollama_auth_usage lim; {PROXY} }}",
                   http_extra="ollama_auth_zone lim 1m;")
    rc, output = gate.test_config()
    assert rc == 0, output


def test_a_limit_brought_in_by_hot_reload_without_usage_fails_closed(gate, ollama):
    gate.write("keys.txt", "k-late late-limit\nk-other other\n")
    gate.configure(f"location / {{ ollama_bearer_keys_file keys.txt; {PROXY} }}")
    gate.start()
    assert send(gate, "k-late").status == 200
    edit_keys(gate, "k-late late-limit requests=5/1m\nk-other other\n")
    before = len(ollama.seen)
    refused = send(gate, "k-late", steer={"Tag": "late"})
    assert refused.status != 200 and 400 <= refused.status < 600, refused
    assert reached(ollama, before, "late") == []
    assert "k-late" not in refused.body.decode(errors="replace")
    assert send(gate, "k-other").status == 200
    log = gate.error_log()
    assert "late-limit" in log and "k-late" not in log, log[-2000:]


# ===================================================================== the state file

def state_dir(gate):
    path = gate.path("state")
    path.mkdir()
    os.chmod(path, 0o777)  # the workers run as nobody
    return path


def quit_nginx(gate):
    pid = gate.master_pid()
    result = gate.run_nginx("-s", "quit")
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: not process_alive(pid), 10), "nginx did not quit"


@pytest.mark.parametrize("stop", ["quit", "terminate"])
def test_state_file_written_at_stop_and_read_back_at_start(gate, stop):
    state = state_dir(gate) / "limits.state"
    start(gate, "k-s s requests=3/1m\nk-o o requests=3/1m\nk-t t tokens=20/1m\n", state=state)
    for _ in range(3):
        assert send(gate, "k-s").status == 200
    assert_rate_limited(send(gate, "k-s"), "requests 3/1m", 65)
    assert send(gate, "k-o").status == 200
    assert send(gate, "k-t", steer={"Prompt-Tokens": 20, "Words": 5}).status == 200
    settled(gate, lambda m: m.value(PROMPT, user="t", model=MODEL) >= 20)
    if stop == "quit":
        quit_nginx(gate)
    else:
        gate.stop()
    assert state.is_file() and state.stat().st_size > 0, "no state file after the stop"
    gate.start()
    assert_rate_limited(send(gate, "k-s"), "requests 3/1m", 65)
    other = send(gate, "k-o")
    assert other.status == 200 and other.header("x-ratelimit-remaining-requests") == "1"
    assert_rate_limited(send(gate, "k-t"), "tokens 20/1m", 65)


def test_missing_state_file_starts_empty(gate):
    state = state_dir(gate) / "never-written"
    start(gate, "k-s s requests=3/1m\n", state=state)
    first = send(gate, "k-s")
    assert first.status == 200 and first.header("x-ratelimit-remaining-requests") == "2"
    assert "[emerg]" not in gate.error_log()


@pytest.mark.parametrize("damage", ["corrupt", "empty", "truncated"])
def test_damaged_state_file_is_logged_by_name_and_ignored(gate, damage):
    directory = state_dir(gate)
    state = directory / "limits.state"
    keys = "k-s s requests=3/1m\n"
    if damage == "truncated":
        start(gate, keys, state=state)
        for _ in range(3):
            assert send(gate, "k-s").status == 200
        gate.stop()
        whole = state.read_bytes()
        assert len(whole) > 1, whole
        state.write_bytes(whole[:len(whole) // 2])
        (gate.dir / "error.log").unlink()
    else:
        state.write_bytes(b"" if damage == "empty" else b"this is not a state file\n\x00\x01\x02" * 10)
    os.chmod(state, 0o666)
    start(gate, keys, state=state)  # starts: start() asserts it
    first = send(gate, "k-s")
    assert first.status == 200 and first.header("x-ratelimit-remaining-requests") == "2", rate_headers(first)
    log = wait_until(lambda: str(state) in gate.error_log() and gate.error_log(), 3)
    assert log, f"the error log does not name {state}: {gate.error_log()[-2000:]}"


# ----- found in review: redirects, trailing data, satisfy any, lines the zone cannot count -----

def test_an_error_page_redirect_neither_counts_twice_nor_loses_the_request(gate, ollama):
    """nginx's own 502 (Ollama down) goes to an `error_page` location through an internal
    redirect, which empties every module's context: the request keeps its admission, so a
    parallel=1 key gets the error page (not a 429 from being admitted twice), requests=2 counts
    it once, the answer keeps its rate-limit headers, and the metrics count it with its code."""
    keys = "k-one one requests=2/1m parallel=1\n"
    start(gate, keys, location_extra="error_page 502 /down.json;",
          server_extra='location = /down.json { internal; default_type application/json; return 502 \'{"error":"down"}\'; }',
          proxy=f"proxy_pass http://127.0.0.1:{free_port()};")
    first = send(gate, "k-one", "/api/tags", body=None, method="GET")
    assert first.status == 502 and first.json() == {"error": "down"}, first
    assert first.header("x-ratelimit-remaining-requests") == "1", rate_headers(first)
    second = send(gate, "k-one", "/api/tags", body=None, method="GET")
    assert second.status == 502 and second.header("x-ratelimit-remaining-requests") == "0"
    third = send(gate, "k-one", "/api/tags", body=None, method="GET")
    assert third.status == 429 and "requests 2/1m" in third.json()["error"]
    metrics = settled(gate, lambda m: m.total("ollama_auth_requests_total", code="502") == 2)
    assert metrics.total("ollama_auth_requests_total", user="one", code="502") == 2
    assert metrics.total(REFUSED, reason="rate_limited") == 1


def test_try_files_to_a_named_location_counts_once(gate, ollama):
    keys = "k-one one requests=3/1m parallel=1\n"
    start(gate, keys, location_extra="try_files /nothing-here @ollama;",
          server_extra=f"location @ollama {{ {PROXY} }}")
    for remaining in ["2", "1", "0"]:
        response = send(gate, "k-one")
        assert response.status == 200, response
        assert response.header("x-ratelimit-remaining-requests") == remaining
    assert send(gate, "k-one").status == 429
    metrics = settled(gate, lambda m: m.total("ollama_auth_requests_total") == 3)
    assert metrics.total("ollama_auth_requests_total", user="one", code="200") == 3


def test_a_streamed_v1_body_with_trailing_data_is_refused_where_usage_counts(gate, ollama):
    """Ollama reads the first JSON value and ignores the rest: such a body would stream without
    its counts (and so without charging its prompt); the gate refuses it."""
    start(gate, "k-tok tok tokens=1000/1m\n")
    body = json.dumps({"model": "gemma3", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) + " x"
    before = len(ollama.seen)
    response = send(gate, "k-tok", "/v1/chat/completions", body=body)
    assert response.status == 400 and "trailing data" in response.error_message("/v1/chat/completions"), response
    assert len(ollama.seen) == before
    metrics = settled(gate, lambda m: m.total(REFUSED, reason="bad_request") == 1)
    assert metrics.total("ollama_auth_requests_total") == 0


def test_satisfy_any_refusals_that_allow_overrides_are_not_counted(gate, ollama):
    """With `satisfy any`, a request without a key that `allow` admits is no refusal; the same
    request where no `allow` admits it is one (the control: the counting did happen)."""
    start(gate, "k-one one\n", location_extra="satisfy any; allow 127.0.0.1; deny all;",
          server_extra=f"location /strict/ {{ ollama_bearer_keys_file keys.txt; ollama_auth_usage lim; {PROXY} }}")
    assert send(gate, {}, "/api/tags", body=None, method="GET").status == 200
    assert send(gate, {}, "/strict/api/tags", body=None, method="GET").status == 401
    metrics = settled(gate, lambda m: m.total(REFUSED) >= 1)
    assert metrics.total(REFUSED) == 1 and metrics.total(REFUSED, reason="no_credential") == 1


def test_more_windows_than_a_key_can_count_skip_the_line(gate):
    keys = ("k-seven seven tokens=1/1s,1/2s,1/3s,1/4s requests=1/1s,1/2s,1/3s\n"
            "k-fine fine requests=5/1m\n")
    start(gate, keys)
    assert send(gate, "k-seven").status == 401
    assert send(gate, "k-fine").status == 200
    assert "more than the 6" in gate.error_log() and "k-seven" not in gate.error_log()


# ===================================================================== estimates and reservations (issue 18)

def test_concurrent_requests_overshoot_a_tokens_budget_by_one_at_most(gate, ollama):
    """8 requests of 5,000 tokens at once under tokens=100/1m: each reserves its estimate when
    admitted, so only the first goes to Ollama."""
    start(gate, "k-t100 t100 tokens=100/1m\n", workers=2)
    results, lock = [], threading.Lock()
    barrier = threading.Barrier(8)
    big = {"Prompt-Tokens": 4000, "Eval-Count": 1000, "Words": 1, "Wait": 0.5, "Tag": "reserved"}

    def client():
        barrier.wait()
        response = send(gate, "k-t100", steer=big)
        with lock:
            results.append(response)

    before = len(ollama.seen)
    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status for r in results)
    assert statuses == [200] + [429] * 7, statuses
    assert len(reached(ollama, before, "reserved")) == 1
    for refusal in (r for r in results if r.status == 429):
        assert_rate_limited(refusal, "tokens 100/1m", 64)
    metrics = settled(gate, lambda m: m.value(PROMPT, user="t100", model=MODEL) >= 4000)
    assert metrics.value(PROMPT, user="t100", model=MODEL) == 4000, "settled at the real count"


def test_a_client_gone_before_the_counts_is_charged_the_prompt_estimate(gate):
    """The prompt's count comes only with the final chunk: a client that leaves before it was
    charged about one token for a huge prompt. Now: the body's bytes / 4."""
    start(gate, "k-t5k t5k tokens=5000/1m\n")
    body = {"model": "gemma3", "prompt": "word " * 8000}  # 40,000 bytes: about 10,000 tokens
    sock = open_stream(gate, "k-t5k", "/api/generate", body, {"Words": 60, "Delay": 0.1, "Prompt-Tokens": 9000})
    read_until(sock, b'"done": false', 2)
    sock.close()
    metrics = settled(gate, lambda m: m.value(PROMPT, user="t5k", model=MODEL) > 0)
    prompt = metrics.value(PROMPT, user="t5k", model=MODEL)
    assert prompt == (len(json.dumps(body)) + 3) // 4, prompt
    assert metrics.value(ESTIMATED, user="t5k", model=MODEL) >= prompt
    assert_rate_limited(send(gate, "k-t5k"), "tokens 5000/1m", 64)


def test_legacy_embeddings_are_charged_an_estimate(gate):
    """/api/embeddings answers carry no counts: charged the prompt's estimate, never 0."""
    start(gate, "k-e e tokens=100/1m\n")
    body = {"model": "nomic-embed-text", "prompt": "x" * 2000}
    assert send(gate, "k-e", "/api/embeddings", body).status == 200
    metrics = settled(gate, lambda m: m.total(PROMPT, user="e") > 0)
    assert metrics.total(PROMPT, user="e") == (len(json.dumps(body)) + 3) // 4
    assert metrics.total(COMPLETION, user="e") == 0, "embeddings generate nothing"
    assert metrics.total(ESTIMATED, user="e") == metrics.total(PROMPT, user="e")
    assert_rate_limited(send(gate, "k-e", "/api/embeddings", body), "tokens 100/1m", 64)


def test_compressed_answers_are_charged_the_estimate_and_warned_once(gate, ollama):
    """An answer with a Content-Encoding cannot be read: it was counted 0 (7 requests of 5,000
    tokens went through tokens=100). Now the estimate is charged, and a warning logged once."""
    start(gate, "k-gz gz tokens=100/1m\nk-free free\n")
    ollama.server.gzip_answers = True
    try:
        statuses = [send(gate, "k-gz", steer={"Prompt-Tokens": 4000, "Eval-Count": 1000}).status for _ in range(7)]
        for _ in range(3):
            assert send(gate, "k-free").status == 200
    finally:
        ollama.server.gzip_answers = False
    assert statuses == [200] + [429] * 6, statuses
    metrics = settled(gate, lambda m: m.total(ESTIMATED, user="gz") > 0)
    # Body bytes / 4 and the default answer of 1,024 tokens.
    expected = (len(json.dumps(WHOLE)) + 3) // 4 + 1024
    assert metrics.total(PROMPT, user="gz") + metrics.total(COMPLETION, user="gz") == expected
    assert metrics.total(ESTIMATED, user="free") == 3 * expected
    warnings = [line for line in gate.error_log().splitlines() if "Content-Encoding" in line and "[warn]" in line]
    assert len(warnings) == 1, warnings


def test_transcriptions_are_charged_an_estimate(gate):
    """/v1/audio/transcriptions answers carry no counts: the upload's bytes / 1,000 and the
    default answer of 1,024 tokens are charged."""
    start(gate, "k-w w tokens=2000/1m\n")
    boundary = "b0undary"
    audio = "A" * 50_000
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n{audio}\r\n'
            f"--{boundary}--\r\n")
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = send(gate, {**bearer("k-w"), **headers}, "/v1/audio/transcriptions", body)
    assert response.status == 200 and response.json()["text"], response
    expected = (len(body) + 999) // 1000 + 1024
    metrics = settled(gate, lambda m: m.total(ESTIMATED, user="w") > 0)
    assert metrics.total(PROMPT, user="w") + metrics.total(COMPLETION, user="w") == expected
    assert metrics.total(ESTIMATED, user="w") == expected
    # 1,075 of 2,000 used: a second upload is admitted, a third is not.
    assert send(gate, {**bearer("k-w"), **headers}, "/v1/audio/transcriptions", body).status == 200
    assert_rate_limited(send(gate, {**bearer("k-w"), **headers}, "/v1/audio/transcriptions", body),
                        "tokens 2000/1m", 64)


def test_a_body_too_large_to_scan_is_reserved_by_its_length(gate, ollama):
    """A key with tokens= has its body read for the estimate; one past the 64 MB the gate scans
    is not refused for that: it is estimated by its length."""
    start(gate, "k-big big tokens=100000000/1d\n", server_extra="client_max_body_size 100m;")
    body = json.dumps({"model": "gemma3", "prompt": "x" * (65 << 20), "stream": False})
    before = len(ollama.seen)
    response = send(gate, "k-big", body=body, steer={"Status": 500})  # Ollama's error: nothing charged
    assert response.status == 500, response
    assert len(ollama.seen) > before
    # Its reservation was given back when it ended (an error from Ollama charges nothing).
    assert send(gate, "k-big").header("x-ratelimit-remaining-tokens") == "100000000"
