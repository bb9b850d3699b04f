"""The fair queue (issue 22), end to end with 2 workers and the slow stand-in: at most `capacity`
inference requests reach Ollama at once, the rest wait in the gate and are dispatched by slot time
over `share=`; a newcomer behind a deep backlog goes next; aborts, 502s, timeouts, full queues,
crashed workers and reloads leave the in-flight gauge at the true number (scraped)."""

import json
import math
import os
import signal
import socket
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_until
from test_bearer import PROXY, bearer

WHOLE = {"model": "gemma3", "prompt": "x", "stream": False}
STREAM = {"model": "gemma3", "prompt": "x"}
KEYS = """\
key-a a share=3
key-b b
key-c c models=gemma3*
key-one one queue=1
"""


def start(gate, capacity=2, extra="", keys=KEYS, workers=2, log=False):
    gate.write("keys.txt", keys)
    log_format = ('log_format queue "$ollama_auth_user $status $ollama_queue_wait"; '
                  "access_log {dir}/queue.log queue;") if log else ""
    gate.configure(f"""
        location / {{
            ollama_bearer_keys_file keys.txt;
            ollama_auth_queue q capacity={capacity} {extra};
            ollama_auth_usage q;
            {PROXY}
        }}
        location = /metrics {{ ollama_auth_metrics q; allow 127.0.0.1; deny all; }}
    """, http_extra=f"ollama_auth_zone q 1m; {log_format}", workers=workers)
    return gate.start()


def send(gate, key, path="/api/generate", body=WHOLE, steer=None, timeout=60):
    headers = bearer(f"key-{key}")
    headers.update({f"X-Fake-{k}": str(v) for k, v in (steer or {}).items()})
    return gate.request(path, method="POST", headers=headers, body=json.dumps(body), timeout=timeout)


def scrape(gate):
    response = gate.request("/metrics")
    assert response.status == 200, response
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def gauge(gate, name, **labels):
    return scrape(gate).get((name, tuple(sorted(labels.items()))), 0)


def in_flight(gate, capacity=2):
    return gauge(gate, "ollama_auth_in_flight", capacity=str(capacity))


def settles_at_zero(gate, capacity=2):
    """The in-flight gauge, scraped until it is 0 (or 5 s pass)."""
    assert wait_until(lambda: in_flight(gate, capacity) == 0, 5), scrape(gate)


def in_parallel(calls):
    """Runs the calls at once; their results, in order."""
    results = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except Exception as error:  # noqa: BLE001 - kept for the assertion that reads it
            results[i] = error
    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def order_seen(ollama, tag):
    """The test ids of the tagged requests, in the order the stand-in got them."""
    return [r["headers"].get("X-Fake-Test-Id") for r in list(ollama.seen) if r["headers"].get("X-Fake-Tag") == tag]


# ==================================================================== capacity and fairness

def test_capacity_is_never_exceeded_and_every_slot_is_used(gate, ollama):
    start(gate, capacity=2)
    tag = f"cap-{time.time()}"
    results = in_parallel([lambda: send(gate, "a", steer={"Wait": 0.4, "Tag": tag}) for _ in range(8)])
    assert [r.status for r in results] == [200] * 8, results
    assert ollama.max_in_flight(tag) == 2, "at most capacity, and a key alone gets every slot"
    waited = [r.header("x-ollama-queue-wait") for r in results if r.header("x-ollama-queue-wait")]
    assert len(waited) >= 4, "six of the eight waited"
    assert all(w.endswith("s") and float(w[:-1]) > 0 for w in waited), waited
    settles_at_zero(gate)
    metrics = scrape(gate)
    assert metrics[("ollama_auth_queue_wait_seconds_count", (("capacity", "2"),))] == 8
    # The GPU time the key used, by the model that answered (ollama_auth_usage counts it).
    assert metrics[("ollama_auth_slot_seconds_total", (("model", "gemma3:1b"), ("user", "a")))] >= 8 * 0.4


def test_a_newcomer_behind_a_deep_backlog_goes_next(gate, ollama):
    start(gate, capacity=2)
    tag = f"new-{time.time()}"
    calls = [lambda i=i: send(gate, "b", steer={"Wait": 0.5, "Tag": tag, "Test-Id": f"b{i}"}) for i in range(16)]

    def newcomer():
        time.sleep(0.3)
        return send(gate, "c", steer={"Wait": 0.1, "Tag": tag, "Test-Id": "c"})
    results = in_parallel(calls + [newcomer])
    assert all(r.status == 200 for r in results), results
    order = order_seen(ollama, tag)
    # FIFO would put c 17th; fair queuing puts it on the next free slot (2 running, then c).
    assert order.index("c") <= 3, order
    assert results[-1].header("x-ollama-queue-wait") is not None


def test_shares_three_to_one_split_the_slot_time(gate, ollama):
    start(gate, capacity=2)
    done = {"a": 0, "b": 0}
    stop = time.time() + 8

    def client(key):
        while time.time() < stop:
            if send(gate, key, steer={"Wait": 0.2}).status == 200:
                done[key] += 1
    in_parallel([lambda k=k: client(k) for k in ["a"] * 4 + ["b"] * 4])
    ratio = done["a"] / max(done["b"], 1)
    assert 2.5 <= ratio <= 3.5, done
    metrics = scrape(gate)
    slot = {k: metrics[("ollama_auth_slot_seconds_total", (("model", "gemma3:1b"), ("user", k)))] for k in "ab"}
    assert 2.5 <= slot["a"] / slot["b"] <= 3.5, slot
    settles_at_zero(gate)


# ==================================================================== what never waits

def test_reads_and_management_never_wait(gate, ollama):
    start(gate, capacity=1)
    slow = threading.Thread(target=lambda: send(gate, "a", steer={"Wait": 1.5}))
    slow.start()
    assert wait_until(lambda: in_flight(gate, 1) == 1, 5)
    began = time.time()
    for path, method in [("/api/tags", "GET"), ("/api/ps", "GET"), ("/api/version", "GET")]:
        assert gate.request(path, method=method, headers=bearer("key-a")).status == 200
    assert send(gate, "a", path="/api/show", body={"model": "gemma3"}).status == 200
    assert time.time() - began < 1.0, "they did not wait for the slot"
    slow.join()
    settles_at_zero(gate, 1)


# ==================================================================== every way out

def open_request(gate, key, steer, body=WHOLE, path="/api/generate"):
    sock = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
    data = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(data)}", f"Authorization: Bearer key-{key}"]
    head += [f"X-Fake-{k}: {v}" for k, v in steer.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    return sock


def test_a_client_that_leaves_while_waiting_is_never_dispatched(gate, ollama):
    start(gate, capacity=1)
    tag = f"gone-{time.time()}"
    holder = open_request(gate, "a", {"Wait": 1.0, "Tag": tag, "Test-Id": "holder"})
    assert wait_until(lambda: in_flight(gate, 1) == 1, 5)
    leaver = open_request(gate, "b", {"Tag": tag, "Test-Id": "leaver"})
    assert wait_until(lambda: gauge(gate, "ollama_auth_queue_waiting", capacity="1", user="b") == 1, 5)
    leaver.close()
    assert wait_until(lambda: gauge(gate, "ollama_auth_queue_waiting", capacity="1", user="b") == 0, 5)
    after = send(gate, "c", steer={"Tag": tag, "Test-Id": "after"})
    assert after.status == 200
    assert b"200 OK" in holder.recv(65536)
    holder.close()
    assert "leaver" not in order_seen(ollama, tag)
    settles_at_zero(gate, 1)


def test_aborts_while_running_and_upstream_errors_free_their_slot(gate, ollama):
    start(gate, capacity=1)
    running = open_request(gate, "a", {"Delay": 0.2, "Words": 50}, body=STREAM)
    assert b"200 OK" in running.recv(65536)
    running.close()  # gone mid-stream
    assert send(gate, "a", steer={"Status": 502}).status == 502
    assert send(gate, "b").status == 200, "the slot came back after the abort and the 502"
    settles_at_zero(gate, 1)


def test_full_queues_and_timeouts_are_503_with_retry_after_in_the_endpoints_shape(gate, ollama):
    start(gate, capacity=1, extra="timeout=1s max_waiting=2")
    holder = open_request(gate, "a", {"Wait": 2.5})
    assert wait_until(lambda: in_flight(gate, 1) == 1, 5)
    first = open_request(gate, "one", {})
    assert wait_until(lambda: gauge(gate, "ollama_auth_queue_waiting", capacity="1", user="one") == 1, 5)
    key_full = send(gate, "one")
    assert key_full.status == 503 and key_full.header("Retry-After") == "5"
    assert key_full.json() == {"error": "service unavailable: too many requests of this key are waiting for the model"}
    second = open_request(gate, "b", {})
    assert wait_until(lambda: scrape(gate).get(("ollama_auth_queue_waiting", (("capacity", "1"), ("user", "b"))))
                      == 1, 5)
    full = send(gate, "c", path="/v1/chat/completions", body={"model": "gemma3", "messages": []})
    assert full.status == 503 and full.header("Retry-After") == "10"
    assert "too many requests are waiting for the model" in full.json()["error"]["message"], full.json()
    # The two waiting ones time out after 1 s, long before the holder ends.
    for sock in (first, second):
        answer = sock.recv(65536)
        assert b"503 Service" in answer and b"Retry-After: 10" in answer, answer
        assert b"waited too long for the model" in answer
        sock.close()
    assert b"200 OK" in holder.recv(65536)
    holder.close()
    settles_at_zero(gate, 1)
    assert "key-" not in gate.error_log(), "no key in the log"


# ==================================================================== clients

def test_ollama_python_and_openai_sdk_stream_through_a_full_queue(gate, ollama):
    import ollama as ollama_client
    import openai
    start(gate, capacity=1)
    base = f"http://127.0.0.1:{gate.port}"

    def native():
        client = ollama_client.Client(host=base, headers=bearer("key-a"))
        return "".join(part["response"] for part in client.generate(model="gemma3", prompt="x", stream=True))

    def v1():
        client = openai.OpenAI(base_url=base + "/v1", api_key="key-b")
        stream = client.chat.completions.create(model="gemma3", messages=[{"role": "user", "content": "x"}],
                                                stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    results = in_parallel([native, v1, native, v1])
    assert all(isinstance(r, str) and "sky" in r for r in results), results
    settles_at_zero(gate, 1)


# ==================================================================== the dashboard

def test_the_dashboards_queue_panels_show_the_queue(gate, ollama, tmp_path):
    """The queue's panels of the shipped dashboard, through a real Prometheus scraping a queued
    gate (test_prometheus.py checks the others), and promtool on the exposition."""
    from test_prometheus import Prometheus, check_scrape_with_promtool, grafana, panel
    start(gate, capacity=1)
    os.chmod(tmp_path, 0o755)
    prometheus = Prometheus(tmp_path, gate.port)
    try:
        assert wait_until(lambda: prometheus.query("up"), 15, 0.2), prometheus.log_text()
        began = time.time()
        results = in_parallel([lambda k=k: send(gate, k, steer={"Wait": 0.5}) for k in "ab" * 4])
        assert [r.status for r in results] == [200] * 8, results
        time.sleep(2.5)
        ended = time.time()
        check_scrape_with_promtool(gate)

        def rows(title, step="1s"):
            series = {}
            for target in panel(title)["targets"]:
                expr = grafana(target["expr"], range_s=math.ceil(ended - began) + 2)
                for key, values in prometheus.query_range(expr, began, ended, step).items():
                    series[(target["legendFormat"], dict(key).get("user", ""))] = max(
                        (v for v in values if not math.isnan(v)), default=0)
            return series
        flight = rows("Fair queue: slots in flight")
        assert flight[("capacity", "")] == 1 and flight[("in flight", "")] == 1, flight
        waiting = rows("Fair queue: requests waiting")
        assert waiting[("{{user}}", "a")] >= 1 and waiting[("{{user}}", "b")] >= 1, waiting
        slot = rows("GPU slot time per second")
        assert set(slot) == {("{{user}}", "a"), ("{{user}}", "b")} and min(slot.values()) > 0, slot
        wait = rows("Fair queue: wait for a slot")
        assert wait[("p95", "")] > 0.4, wait
    finally:
        prometheus.stop()


# ==================================================================== configuration and life

def test_the_wait_is_logged(gate, ollama):
    start(gate, capacity=1, log=True)
    in_parallel([lambda: send(gate, "a", steer={"Wait": 0.3}) for _ in range(3)])
    gate.request("/api/tags", headers=bearer("key-a"))
    lines = wait_until(lambda: len((gate.dir / "queue.log").read_text().splitlines()) >= 4 and
                       (gate.dir / "queue.log").read_text().splitlines(), 5)
    waits = [line.split()[2] for line in lines if line.split()[0] == "a" and len(line.split()) == 3]
    assert len(waits) == 3 and "0.000" in waits and any(float(w) >= 0.2 for w in waits), lines
    assert any(len(line.split()) == 2 for line in lines), "a read did not queue: empty"


@pytest.mark.parametrize("arguments, message", [
    ("q", "invalid number of arguments in \"ollama_auth_queue\""),
    ("q timeout=1s", "needs capacity=<n>"),
    ("q capacity=0", "invalid \"ollama_auth_queue\" parameter \"capacity=0\""),
    ("q capacity=2 timeout=soon", "parameter \"timeout=soon\""),
    ("q capacity=2 max_waiting=-1", "parameter \"max_waiting=-1\""),
    ("q capacity=2 colour=blue", "parameter \"colour=blue\""),
    ("q capacity=2 max_waiting=1000000", "needs a zone of at least"),
])
def test_bad_directives_fail_nginx_t(gate, arguments, message):
    gate.write("keys.txt", KEYS)
    gate.configure(f"location / {{ ollama_bearer_keys_file keys.txt; ollama_auth_queue {arguments}; }}",
                   http_extra="ollama_auth_zone q 1m;")
    code, output = gate.test_config()
    assert code != 0 and message in output, output


def test_a_crashed_workers_slots_come_back(gate, ollama):
    start(gate, capacity=2)
    holders = [open_request(gate, "a", {"Wait": 30}) for _ in range(2)]
    assert wait_until(lambda: in_flight(gate) == 2, 5)
    for pid in gate.worker_pids():
        os.kill(pid, signal.SIGKILL)
    for sock in holders:
        sock.close()
    # nginx starts new workers; the first sweeps the dead ones' tickets.
    assert wait_until(lambda: len(gate.worker_pids()) == 2, 10)
    settles_at_zero(gate)
    assert send(gate, "b").status == 200
    # The fixture fails a test whose workers died on a signal: these two were killed here, and
    # nothing else may have died.
    log = (gate.dir / "error.log").read_text()
    died = [line for line in log.splitlines() if "exited on signal" in line]
    assert len(died) == 2 and all("exited on signal 9" in line for line in died), died
    (gate.dir / "error.log").write_text(log.replace("exited on signal 9", "was killed by the test (signal 9)"))


def test_requests_waiting_at_a_reload_are_served(gate, ollama):
    start(gate, capacity=1)
    holder = open_request(gate, "a", {"Wait": 1.0})
    assert wait_until(lambda: in_flight(gate, 1) == 1, 5)
    waiting = [open_request(gate, key, {"Wait": 0.2}) for key in "bc"]
    assert wait_until(lambda: sum(gauge(gate, "ollama_auth_queue_waiting", capacity="1", user=k) for k in "bc") == 2,
                      5)
    gate.reload()
    for sock in [holder] + waiting:
        assert b"200 OK" in sock.recv(65536)
        sock.close()
    settles_at_zero(gate, 1)


def test_reloads_to_other_capacities_never_fill_the_zone(gate, ollama):
    """A zone holds 16 queues; the queues of capacities reloaded away are freed once idle."""
    start(gate, capacity=1)
    for capacity in range(2, 20):
        start_conf = gate.path("nginx.conf").read_text()
        gate.write("nginx.conf", start_conf.replace(f"capacity={capacity - 1} ", f"capacity={capacity} ").replace(
            f"capacity={capacity - 1};", f"capacity={capacity};"))
        gate.reload()
        assert send(gate, "a").status == 200, capacity
    assert in_flight(gate, 19) == 0
    assert "has no room for the queue" not in gate.error_log()


def test_locations_naming_one_zone_and_capacity_share_one_queue(gate, ollama):
    gate.write("keys.txt", KEYS)
    queue = "ollama_bearer_keys_file keys.txt; ollama_auth_queue q capacity=1;"
    gate.configure(f"""
        location /api/ {{ {queue} {PROXY} }}
        location /v1/ {{ {queue} {PROXY} }}
        location = /metrics {{ ollama_auth_metrics q; allow 127.0.0.1; deny all; }}
    """, http_extra="ollama_auth_zone q 1m;", workers=2)
    gate.start()
    tag = f"shared-{time.time()}"
    steer = {"Wait": 0.3, "Tag": tag}
    chat = {"model": "gemma3", "messages": [], "stream": False}
    results = in_parallel([lambda: send(gate, "a", steer=steer),
                           lambda: send(gate, "b", path="/v1/chat/completions", body=chat, steer=steer)] * 3)
    assert [r.status for r in results] == [200] * 6, results
    assert ollama.max_in_flight(tag) == 1, "one Ollama behind two locations: one queue"
    settles_at_zero(gate, 1)
