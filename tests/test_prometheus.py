"""The monitoring stack for real (issue 23): Debian's Prometheus (/usr/bin/prometheus, run here as a
child process on a loopback port, with its own data directory) scrapes a gate under traffic with
the scrape settings of docker/monitoring/prometheus.yml (every second instead of every 15), and
every expression of the shipped Grafana dashboard is evaluated through Prometheus' HTTP API, its
variables filled in as Grafana fills them, against the counts the test sent. The gate is
restarted half way, so the counters reset as they do in production, and later scrapes fail for a
few seconds, so the series go stale and come back.

Prometheus must be installed (`make deps` installs it): without it these tests fail."""

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, wait_for_port, wait_until
from test_bearer import bearer
from test_usage import start_gated_metrics

MONITORING = ROOT / "docker/monitoring"
DASHBOARD = MONITORING / "grafana/dashboards/ollama-auth.json"
SCRAPE_SECONDS = 1
PROM_KEY = "k-prometheus-0123456789"
KEYS = f"""\
k-alice alice
k-bob bob
k-carol carol
{PROM_KEY} prometheus scopes=all
"""
GEMMA, LLAMA, QWEN = "gemma3:1b", "llama3.2:3b", "qwen3:8b"


def binary(name):
    path = shutil.which(name) or f"/usr/bin/{name}"
    # A failure, not a skip: `make deps` installs Debian's prometheus package.
    assert os.access(path, os.X_OK), f"{name} is not installed: apt-get install prometheus (make deps does)"
    return path


# ===================================================================== Prometheus, for real

class Prometheus:
    """Debian's Prometheus scraping one gate with the shipped scrape config, made local."""

    def __init__(self, directory, gate_port):
        self.dir = directory
        self.port = free_port()
        shipped = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        scrape = next(s for s in shipped["scrape_configs"] if s["job_name"] == "ollama-gate")
        self.key_file = self.dir / Path(scrape["authorization"]["credentials_file"]).name
        self.key_file.write_text(PROM_KEY + "\n")
        scrape["authorization"]["credentials_file"] = str(self.key_file)
        scrape["static_configs"] = [{"targets": [f"127.0.0.1:{gate_port}"]}]
        self.job = scrape["job_name"]
        config = {"global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
                  "scrape_configs": [scrape]}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        check = subprocess.run([binary("promtool"), "check", "config", str(self.dir / "prometheus.yml")],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = open(self.dir / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [binary("prometheus"), f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        wait_for_port(self.port, 30)
        assert wait_until(lambda: self.ready(), 30, 0.1), self.log_text()

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def log_text(self):
        return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]

    def api(self, path, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}", timeout=30) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr, at=None):
        """An instant query: {labels as a sorted tuple: value}."""
        data = self.api("query", query=expr, **({"time": f"{at:.3f}"} if at else {}))
        assert data["resultType"] == "vector", data
        result = {}
        for sample in data["result"]:
            labels = tuple(sorted(sample["metric"].items()))
            assert labels not in result, f"{labels} twice in {expr}"
            result[labels] = float(sample["value"][1])
        return result

    def query_range(self, expr, start, end, step):
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)
        assert data["resultType"] == "matrix", data
        return {tuple(sorted(s["metric"].items())): [float(v) for _, v in s["values"]] for s in data["result"]}

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
        shutil.rmtree(self.dir / "data", ignore_errors=True)  # the log stays, with pytest's tmp_path


def named(result, *labels):
    """An instant query's result keyed by these labels' values."""
    out = {}
    for key, value in result.items():
        found = dict(key)
        out[tuple(found.get(label, "") for label in labels)] = value
    return out


# ===================================================================== Grafana's substitutions

def regex_escape(value):
    """As Grafana's Prometheus data source escapes a value of a multi-value variable for `=~`
    (prometheusSpecialRegexEscape): a backslash as four, other regex metacharacters and `'` after
    two (one backslash in the regex, written twice inside the PromQL string)."""
    return re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", value.replace("\\", "\\" * 4))


def grafana(expr, *, range_s, interval_s=SCRAPE_SECONDS, scrape_s=SCRAPE_SECONDS, users=None):
    """The expression as Grafana sends it: `$__range` is the time range in whole seconds,
    `$__interval` the step, `$__rate_interval` max($__interval + scrape interval, 4 x scrape
    interval) (the data source's timeInterval is the scrape interval); `$user` is the variable's
    allValue for All, one escaped value alone, several as an alternation in parentheses."""
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "user")
    if users is None:
        user = variable["allValue"]
    elif len(users) == 1:
        user = regex_escape(users[0])
    else:
        user = "(" + "|".join(regex_escape(u) for u in users) + ")"
    values = {"__range": f"{range_s}s", "__range_s": str(range_s), "__range_ms": str(range_s * 1000),
              "__interval": f"{interval_s}s", "__interval_ms": str(interval_s * 1000),
              "__rate_interval": f"{max(interval_s + scrape_s, 4 * scrape_s)}s", "user": user}

    def fill(match):
        assert match.group(1) in values, f"a variable Grafana would not fill here: {match.group(0)}"
        return values[match.group(1)]
    return re.sub(r"\$\{?(\w+)\}?", fill, expr)


def panels():
    return json.loads(DASHBOARD.read_text())["panels"]


def panel(title_start):
    found = [p for p in panels() if p["title"].startswith(title_start)]
    assert len(found) == 1, title_start
    return found[0]


# ===================================================================== traffic, and what was sent

class Ledger:
    """What the test sent through the gate, as the gate should count it."""

    def __init__(self):
        self.tokens = Counter()      # (user, model) -> prompt + completion
        self.prompt = Counter()
        self.completion = Counter()
        self.requests = Counter()    # (user, model, code)
        self.refused = Counter()     # reason

    def __add__(self, other):
        total = Ledger()
        for name in vars(total):
            setattr(total, name, getattr(self, name) + getattr(other, name))
        return total


def infer(gate, ledger, user, model, prompt, completion, how):
    """One inference request as `user`, answered by `model` with these counts; `how`: the shape."""
    headers = {**bearer(f"k-{user}"), "X-Fake-Model": model, "X-Fake-Prompt-Tokens": str(prompt),
               "X-Fake-Eval-Count": str(completion), "X-Fake-Words": "3", "X-Fake-Delay": "0"}
    path, body = {
        "whole": ("/api/generate", {"model": model, "prompt": "x", "stream": False}),
        "ndjson": ("/api/chat", {"model": model, "messages": [{"role": "user", "content": "x"}]}),
        "sse": ("/v1/chat/completions", {"model": model, "messages": [], "stream": True}),
    }[how]
    response = gate.request(path, method="POST", headers=headers, body=json.dumps(body))
    assert response.status == 200, response
    ledger.tokens[(user, model)] += prompt + completion
    ledger.prompt[(user, model)] += prompt
    ledger.completion[(user, model)] += completion
    ledger.requests[(user, model, "200")] += 1


def no_model(gate, ledger, user, what):
    """A request no model answers: a listing, or an error of Ollama's."""
    if what == "listing":
        response = gate.request("/api/tags", headers=bearer(f"k-{user}"))
        code = 200
    else:
        response = gate.request("/api/generate", method="POST", body='{"model": "gone", "prompt": "x"}',
                                headers={**bearer(f"k-{user}"), "X-Fake-Status": "500"})
        code = 500
    assert response.status == code, response
    ledger.requests[(user, "", str(code))] += 1


def refuse(gate, ledger, reason):
    headers = {"no_credential": {}, "unknown_key": bearer("k-nobody")}[reason]
    assert gate.request("/api/tags", headers=headers).status == 401
    ledger.refused[reason] += 1


def gap():
    """More than a scrape interval: what comes next lands in another scrape."""
    time.sleep(SCRAPE_SECONDS * 1.5)


def seen(prometheus, ledger, timeout=20):
    """Waits until Prometheus' last scrape holds the ledger's request and refusal counts (a
    request's tokens are counted with it, under the same lock)."""
    want_requests = sum(ledger.requests.values())
    want_refused = sum(ledger.refused.values())

    def done():
        requests = sum(prometheus.query("ollama_auth_requests_total").values())
        refused = sum(prometheus.query("ollama_auth_refused_total").values())
        return requests == want_requests and refused == want_refused
    assert wait_until(done, timeout, 0.2), (prometheus.query("ollama_auth_requests_total"), ledger.requests)


def check_counters(prometheus, ledger):
    """Every counter Prometheus holds equals what was sent (in this life of the gate)."""
    requests = named(prometheus.query("ollama_auth_requests_total"), "user", "model", "code")
    assert requests == {k: v for k, v in ledger.requests.items() if v}, requests
    for family, counts in [("prompt", ledger.prompt), ("completion", ledger.completion)]:
        tokens = named(prometheus.query(f"ollama_auth_{family}_tokens_total"), "user", "model")
        # Token series only where a model answered: none with model="" (listings, errors).
        assert tokens == dict(counts), (family, tokens)
    refused = named(prometheus.query("ollama_auth_refused_total"), "reason")
    assert {k[0]: v for k, v in refused.items() if v} == dict(ledger.refused), refused
    assert len(refused) == 12, refused  # every reason, zeros included
    per_model = Counter()
    for (_, model, _), count in ledger.requests.items():
        per_model[model] += count
    durations = named(prometheus.query("ollama_auth_request_duration_seconds_count"), "model")
    assert {k[0]: v for k, v in durations.items()} == dict(per_model), durations
    # The target is up, with no scrape error.
    targets = prometheus.api("targets")["activeTargets"]
    assert [(t["labels"]["job"], t["health"], t["lastError"]) for t in targets] == [(prometheus.job, "up", "")]
    assert named(prometheus.query("up"), "job") == {(prometheus.job,): 1.0}


def check_scrape_with_promtool(gate):
    response = gate.request("/metrics", headers=bearer(PROM_KEY))
    assert response.status == 200, response
    lint = subprocess.run([binary("promtool"), "check", "metrics"], input=response.body, capture_output=True,
                          timeout=30)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), (lint, response.body)


# ===================================================================== the tests

def test_prometheus_and_promtool_are_installed():
    """Fails, not skips, without them (the test below then errors in its fixture too)."""
    for name in ["prometheus", "promtool"]:
        version = subprocess.run([binary(name), "--version"], capture_output=True, text=True, timeout=30)
        assert version.returncode == 0 and re.search(r"version \d+\.\d+", version.stdout + version.stderr), version


@pytest.fixture
def monitored(make_gate, tmp_path):
    gate = start_gated_metrics(make_gate(), KEYS)
    os.chmod(tmp_path, 0o755)
    prometheus = Prometheus(tmp_path, gate.port)
    try:
        yield gate, prometheus
    finally:
        prometheus.stop()


def test_prometheus_scrapes_the_gate_and_every_dashboard_expression_agrees_with_what_was_sent(monitored):
    gate, prometheus = monitored
    # Prometheus has scraped the gate before any traffic: no series of users yet.
    assert wait_until(lambda: prometheus.query("ollama_auth_refused_total"), 15, 0.2), prometheus.log_text()
    assert prometheus.query("ollama_auth_requests_total") == {}
    began = time.time()

    # First life of the gate: series appear in waves, each in a later scrape than the last.
    first = Ledger()
    infer(gate, first, "alice", GEMMA, 20, 30, "whole")
    infer(gate, first, "alice", GEMMA, 11, 9, "ndjson")
    infer(gate, first, "bob", LLAMA, 40, 60, "sse")
    gap()
    infer(gate, first, "alice", LLAMA, 25, 25, "whole")  # one request, then never again
    infer(gate, first, "bob", GEMMA, 5, 7, "ndjson")
    no_model(gate, first, "bob", "listing")
    refuse(gate, first, "no_credential")
    gap()
    infer(gate, first, "alice", GEMMA, 13, 17, "sse")
    infer(gate, first, "bob", LLAMA, 30, 30, "whole")
    no_model(gate, first, "alice", "error")
    refuse(gate, first, "unknown_key")
    refuse(gate, first, "no_credential")
    seen(prometheus, first)
    check_counters(prometheus, first)
    check_scrape_with_promtool(gate)

    # A restart: the zone starts empty, every counter from 0. Before it, the last series made
    # have been scraped a few times, so that a rate over them has two samples (a rate, like
    # increase(), shows nothing for a series seen once).
    time.sleep(SCRAPE_SECONDS * 2.5)
    gate.stop()
    gate.start()
    assert wait_until(lambda: prometheus.query("ollama_auth_requests_total") == {}, 15, 0.2)

    # Second life: series that come back (with less than they had: see the README) and new ones.
    second = Ledger()
    infer(gate, second, "alice", GEMMA, 8, 4, "ndjson")
    infer(gate, second, "carol", QWEN, 50, 70, "sse")  # a new user and model
    seen(prometheus, second)
    # Failed scrapes (Prometheus cannot read its key file, so the gate sees and counts nothing)
    # mark every series stale; they come back with the values they had, not to be counted again.
    prometheus.key_file.unlink()
    assert wait_until(lambda: named(prometheus.query("up"), "job") == {(prometheus.job,): 0.0}, 15, 0.2)
    assert wait_until(lambda: prometheus.query("ollama_auth_requests_total") == {}, 15, 0.2)
    prometheus.key_file.write_text(PROM_KEY + "\n")
    seen(prometheus, second)
    infer(gate, second, "bob", LLAMA, 6, 6, "whole")
    infer(gate, second, "carol", QWEN, 9, 1, "whole")
    no_model(gate, second, "carol", "listing")
    refuse(gate, second, "no_credential")
    seen(prometheus, second)
    check_counters(prometheus, second)
    for key in second.tokens:
        assert key not in first.tokens or second.tokens[key] < first.tokens[key], key
    # A subquery's steps fall on multiples of its step, the last one at or before the query's
    # time: a step later, that last step comes after the scrape that saw the last request.
    time.sleep(SCRAPE_SECONDS)
    ended = time.time()
    sent = first + second
    range_s = math.ceil(ended - began) + 2

    # Tokens in the time range: per user and model, what was sent over both lives, within 2%.
    in_range = panel("Tokens in the time range")
    [target] = in_range["targets"]
    assert target.get("instant") is True
    expr = grafana(target["expr"], range_s=range_s)
    got = named(prometheus.query(expr, at=ended), "user", "model")
    assert set(got) == set(sent.tokens), (got, sent.tokens)
    for key, tokens in sent.tokens.items():
        assert abs(got[key] - tokens) <= 0.02 * tokens, (key, got[key], tokens)
    # The form it replaces, increase() over the range, misses a series that appears inside it:
    # alice's one request to llama3.2 is not seen at all.
    old = grafana('sum by (user, model) (increase(ollama_auth_prompt_tokens_total[$__range])'
                  ' + increase(ollama_auth_completion_tokens_total[$__range]))', range_s=range_s)
    assert named(prometheus.query(old, at=ended), "user", "model")[("alice", LLAMA)] < 0.5 * sent.tokens[("alice", LLAMA)]
    # The user selector: one user, and two.
    for users in [["alice"], ["bob", "carol"]]:
        got = named(prometheus.query(grafana(target["expr"], range_s=range_s, users=users), at=ended), "user", "model")
        assert got.keys() == {k for k in sent.tokens if k[0] in users}, (users, got)
        assert all(abs(got[k] - sent.tokens[k]) <= 0.02 * sent.tokens[k] for k in got), (users, got)

    # Every other panel (rates, over the whole test at Grafana's step): it parses and answers,
    # with the rows of what was sent (none with model=""), some of them above 0. A rate misses a
    # series' first value as increase() does; these panels show a pace, not totals.
    users = {(user,) for (user, _, _) in sent.requests}
    panels_want = [
        ("Tokens per second", ("user", "model"), set(sent.tokens).__eq__),
        ("Requests per second, by status code", ("code",), {(code,) for (_, _, code) in sent.requests}.__eq__),
        ("Refusals per second", ("reason",), lambda rows: len(rows) == 12),
        ("Request duration", ("model",), {(model,) for (_, model, _) in sent.requests}.__eq__),
        ("Requests per second, by user", ("user",), users.__eq__),
    ]
    for title, labels, rows_ok in panels_want:
        for target in panel(title)["targets"]:
            expr = grafana(target["expr"], range_s=range_s)
            series = prometheus.query_range(expr, began, ended, f"{SCRAPE_SECONDS}s")
            rows = {tuple(dict(key).get(label, "") for label in labels) for key in series}
            assert rows_ok(rows), (title, rows)
            values = [v for values in series.values() for v in values if not math.isnan(v)]
            assert values and all(v >= 0 for v in values) and max(values) > 0, (title, series)
    # The fair queue's panels need a queue: test_queue.py checks them against a Prometheus of its own.
    queue_panels = ["Fair queue: ", "GPU slot time per second"]
    covered = ["Tokens in the time range"] + [title for title, _, _ in panels_want] + queue_panels
    assert all(any(p["title"].startswith(title) for title in covered) for p in panels()), "a panel not checked here"
    refusals = prometheus.query_range(grafana(panel("Refusals per second")["targets"][0]["expr"], range_s=range_s),
                                      began, ended, f"{SCRAPE_SECONDS}s")
    assert {dict(k)["reason"] for k, values in refusals.items() if max(values) > 0} == set(sent.refused)

    # The user variable, as Grafana asks for label_values(metric, label).
    query = json.loads(DASHBOARD.read_text())["templating"]["list"][0]["query"]["query"]
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", query).groups()
    values = prometheus.api(f"label/{label}/values", **{"match[]": metric, "start": f"{began:.0f}",
                                                         "end": f"{ended:.0f}"})
    assert sorted(values) == sorted({user for (user, _, _) in sent.requests})


def test_panels_the_user_selector_cannot_filter_say_so():
    """A panel whose series have no `user` label ignores the selector: its title says so."""
    unfiltered = [p for p in panels() if not all('user=~"$user"' in t["expr"] for t in p["targets"])]
    assert {p["title"].split(",")[0] for p in unfiltered} == {
        "Refusals per second", "Request duration", "Fair queue: slots in flight and capacity (all users)",
        "Fair queue: wait for a slot (p50"}
    for p in unfiltered:
        assert "all users" in p["title"], p["title"]
        assert "User selector" in p["description"], p["description"]
    for p in panels():
        if p not in unfiltered:
            assert "all users" not in p["title"], p["title"]


def test_variables_are_filled_in_as_grafana_does():
    """The substitutions above, on known cases (Grafana 10's Prometheus data source)."""
    expr = 'rate(x{user=~"$user"}[$__rate_interval]) offset $__interval [$__range:$__interval]'
    assert grafana(expr, range_s=3600, interval_s=15, scrape_s=15) == \
        'rate(x{user=~".*"}[60s]) offset 15s [3600s:15s]'
    assert grafana(expr, range_s=60, interval_s=30, scrape_s=15, users=["a.b\\c"]) == \
        'rate(x{user=~"a\\\\.b\\\\\\\\c"}[60s]) offset 30s [60s:30s]'
    # $__rate_interval: at least four scrapes, and at least a step and a scrape.
    assert "[135s]" in grafana(expr, range_s=86400, interval_s=120, scrape_s=15)
    assert 'user=~"(alice|bob)"' in grafana(expr, range_s=60, users=["alice", "bob"])
    with pytest.raises(AssertionError):
        grafana("$__unknown", range_s=60)
