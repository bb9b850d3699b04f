"""Several Ollama servers behind one gate (issue 21): `ollama_auth_fleet`, `ollama_auth_use_fleet`,
`$ollama_fleet_backend` and `$ollama_request_model`, with real nginx (2 workers), three stand-ins
serving different model sets, real HTTP and real client libraries.

One gate serves the whole file (polls every second), so the file stays well under a minute and a
half; the tests that stop or spoil a member put it back as they found it."""

import json
import time

import ollama
import openai
import pytest

from conftest import Gate, module_path, nginx_binary, wait_until
from fake_ollama import FakeOllama

KEYS = """\
k-all admin scopes=all
k-some some models=gemma3:1b,phi4
"""

# A: gemma3:1b and qwen3, nothing loaded; B: gemma3:1b (loaded) and llama3.2; C: phi4, routed
# through an `upstream` block named as its `server name=`.
MODELS = {
    "a": (["gemma3:1b", "qwen3:latest"], []),
    "b": (["gemma3:1b", "llama3.2:latest"], ["gemma3:1b"]),
    "c": (["phi4:latest"], []),
}
ALL_MODELS = sorted({m for models, _ in MODELS.values() for m in models})


def conf(ports):
    return f"""
    ollama_auth_fleet gpus interval=1s timeout=800ms fails=2 max_answer=64k {{
        server 127.0.0.1:{ports['a']};
        server 127.0.0.1:{ports['b']};
        server 127.0.0.1:{ports['c']} name=c;
    }}
    upstream c {{ server 127.0.0.1:{ports['c']}; }}
    map $ollama_request_model $by_map {{ default none; "phi4:latest" phi; ~^qwen qwen; }}
    """


SERVER = """
    ollama_bearer_keys_file keys.txt;
    ollama_auth_use_fleet gpus;
    proxy_set_header X-Model $ollama_request_model;
    proxy_set_header X-By-Map $by_map;
    proxy_set_header Authorization "";
    location / {
        proxy_pass http://$ollama_fleet_backend;
        error_page 502 504 = @retry;
    }
    location @retry {
        proxy_pass http://$ollama_fleet_backend;
    }
"""


@pytest.fixture(scope="module")
def fleet():
    fakes = {name: FakeOllama(models=models, loaded=loaded).__enter__() for name, (models, loaded) in MODELS.items()}
    ports = {name: fake.port for name, fake in fakes.items()}
    gate = Gate(nginx_binary(), module_path(), ports["a"])
    gate.write("keys.txt", KEYS)
    gate.configure(SERVER, http_extra=conf(ports), workers=2)
    gate.start()
    state = {"gate": gate, "fakes": fakes, "ports": ports}
    assert wait_until(lambda: listed(gate) == ALL_MODELS, 10), listed(gate)
    yield state
    crashed = "exited on signal" in gate.error_log()
    gate.cleanup()
    for fake in state["fakes"].values():
        fake.__exit__(None, None, None)
    assert not crashed, "an nginx worker crashed"


def listed(gate, key="k-all", path="/api/tags"):
    answer = gate.request(path, headers={"Authorization": f"Bearer {key}"})
    if answer.status != 200:
        return None
    body = answer.json()
    if path == "/v1/models":
        return sorted(entry["id"] for entry in body["data"])
    return sorted(entry["model"] for entry in body["models"])


def chat(gate, model, key="k-all", path="/api/chat", headers=None):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False})
    all_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
    return gate.request(path, method="POST", headers=all_headers, body=body)


def who_answered(fleet, path, before):
    """The stand-ins that saw `path` since `before` (their counts of seen requests)."""
    return [name for name, fake in fleet["fakes"].items()
            if any(seen["path"] == path for seen in fake.seen[before[name]:])]


def marks(fleet):
    return {name: len(fake.seen) for name, fake in fleet["fakes"].items()}


def test_each_model_goes_to_a_member_that_has_it(fleet):
    gate = fleet["gate"]
    for model, member, shown, mapped in [("Qwen3", "a", "qwen3:latest", "qwen"), ("llama3.2", "b", "llama3.2:latest", "none"),
                                         ("phi4:latest", "c", "phi4:latest", "phi"), ("gemma3:1b", "b", "gemma3:1b", "none")]:
        before = marks(fleet)
        answer = chat(gate, model)
        assert answer.status == 200, (model, answer)
        assert who_answered(fleet, "/api/chat", before) == [member], model
        seen = fleet["fakes"][member].seen[-1]
        assert seen["headers"]["X-Model"] == shown
        assert seen["headers"]["X-By-Map"] == mapped
        assert json.loads(seen["body"])["model"] == model, "the body goes on unchanged"


def test_a_model_on_two_members_goes_where_it_is_loaded_then_to_the_less_busy(fleet):
    gate, fakes = fleet["gate"], fleet["fakes"]
    for _ in range(4):
        before = marks(fleet)
        assert chat(gate, "gemma3:1b").status == 200
        assert who_answered(fleet, "/api/chat", before) == ["b"], "loaded on b"
    fakes["b"].loaded = []
    fakes["a"].loaded = []
    assert wait_until(lambda: listed(gate, path="/api/ps") == [], 5)
    import threading
    slow = threading.Thread(target=chat, args=(gate, "gemma3:1b"), kwargs={"headers": {"X-Fake-Wait": "2", "X-Fake-Tag": "slow"}})
    slow.start()
    try:
        assert wait_until(lambda: fakes["a"].in_flight("slow") + fakes["b"].in_flight("slow") == 1, 3)
        busy = "a" if fakes["a"].in_flight("slow") else "b"
        idle = "b" if busy == "a" else "a"
        for _ in range(3):
            before = marks(fleet)
            assert chat(gate, "gemma3:1b").status == 200
            assert who_answered(fleet, "/api/chat", before) == [idle], "both cold: the less busy"
    finally:
        slow.join()
        fakes["b"].loaded = ["gemma3:1b"]
    assert wait_until(lambda: listed(gate, path="/api/ps") == ["gemma3:1b"], 5)


def test_a_model_no_member_has_is_404_in_the_endpoints_shape(fleet):
    gate = fleet["gate"]
    before = marks(fleet)
    answer = chat(gate, "mistral")
    assert answer.status == 404
    assert "mistral:latest" in answer.json()["error"] and "not found" in answer.json()["error"]
    answer = chat(gate, "mistral", path="/v1/chat/completions")
    assert answer.status == 404
    assert "not found" in answer.json()["error"]["message"]
    assert marks(fleet) == before, "nothing was sent to any member"
    # Refused by the key's policy before the fleet is asked: 403, not a 404 that tells it apart.
    assert chat(gate, "mistral", key="k-some").status == 403
    assert chat(gate, "gemma3:1b", key="nobody").status == 401


def test_listings_are_the_union_once_each_cut_per_key(fleet):
    gate = fleet["gate"]
    before = marks(fleet)
    assert listed(gate) == ALL_MODELS
    assert listed(gate, path="/v1/models") == ALL_MODELS
    assert listed(gate, path="/api/ps") == ["gemma3:1b"]
    assert listed(gate, key="k-some") == ["gemma3:1b", "phi4:latest"]
    assert listed(gate, key="k-some", path="/v1/models") == ["gemma3:1b", "phi4:latest"]
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{gate.port}/v1", api_key="k-some", max_retries=0)
    assert sorted(m.id for m in sdk.models.list()) == ["gemma3:1b", "phi4:latest"]


def test_model_management_needs_its_target_named(fleet):
    gate, ports = fleet["gate"], fleet["ports"]
    headers = {"Authorization": "Bearer k-all"}
    before = marks(fleet)
    answer = gate.request("/api/pull", method="POST", headers=headers, body='{"model":"gemma3:1b"}')
    assert answer.status == 400 and "X-Ollama-Backend" in answer.json()["error"]
    answer = gate.request("/api/delete", method="DELETE", headers={**headers, "X-Ollama-Backend": "nope"},
                          body='{"model":"gemma3:1b"}')
    assert answer.status == 400
    assert marks(fleet) == before, "never broadcast, never guessed"
    answer = gate.request("/api/pull", method="POST", headers={**headers, "X-Ollama-Backend": f"127.0.0.1:{ports['a']}"},
                          body='{"model":"mistral"}')
    assert answer.status == 200
    assert who_answered(fleet, "/api/pull", before) == ["a"]
    answer = gate.request("/api/copy", method="POST", headers={**headers, "X-Ollama-Backend": "c"},
                          body='{"source":"phi4","destination":"phi4-copy"}')
    assert answer.status == 200
    assert who_answered(fleet, "/api/copy", before) == ["c"]


def test_a_stopped_member_is_routed_around_and_used_again_when_back(fleet):
    gate, fakes, ports = fleet["gate"], fleet["fakes"], fleet["ports"]
    fakes["b"].__exit__(None, None, None)
    try:
        # At once, before any poll has failed: b still looks up and has gemma3 loaded; the try
        # there fails to connect, and error_page sends the request again, to a, body and all.
        before = marks(fleet)
        answer = chat(gate, "gemma3:1b")
        assert answer.status == 200, answer
        assert who_answered(fleet, "/api/chat", before) == ["a"]
        assert json.loads(fakes["a"].seen[-1]["body"])["messages"][0]["content"] == "hi"
        # Within the poll interval plus two failed polls: gemma3 goes to a, llama3.2 is nowhere.
        assert wait_until(lambda: chat(gate, "llama3.2").status == 404, 6)
        for _ in range(3):
            before = marks(fleet)
            assert chat(gate, "gemma3:1b").status == 200
            assert who_answered(fleet, "/api/chat", before) == ["a"]
        assert "marked down" in gate.error_log()
    finally:
        fakes["b"] = FakeOllama(port=ports["b"], models=MODELS["b"][0], loaded=MODELS["b"][1]).__enter__()
    assert wait_until(lambda: chat(gate, "llama3.2").status == 200, 6)
    before = marks(fleet)
    assert chat(gate, "gemma3:1b").status == 200
    assert who_answered(fleet, "/api/chat", before) == ["b"], "loaded on b again"


@pytest.mark.parametrize("spoil", ["huge", "malformed", "slow", "status"])
def test_hostile_poll_answers_do_not_hurt_the_gate(fleet, spoil):
    gate, fakes = fleet["gate"], fleet["fakes"]
    c = fakes["c"]
    if spoil == "huge":
        body = b'{"models":[' + b",".join(b'{"model":"m%d"}' % i for i in range(20000)) + b"]}"
        c.tags_raw = b"HTTP/1.0 200 OK\r\n\r\n" + body
    elif spoil == "malformed":
        c.tags_raw = b'HTTP/1.0 200 OK\r\n\r\n{"models":[{"model":"phi4"'
    elif spoil == "slow":
        c.tags_delay = 3
    else:
        c.tags_raw = b"HTTP/1.0 500 Oops\r\n\r\n{}"
    try:
        assert wait_until(lambda: chat(gate, "phi4").status == 404, 8), spoil
        started = time.monotonic()
        assert chat(gate, "qwen3").status == 200
        assert time.monotonic() - started < 0.5, "the other members' requests are not held up"
    finally:
        c.tags_raw = None
        c.tags_delay = 0
    assert wait_until(lambda: chat(gate, "phi4").status == 200, 8)


def test_real_clients_through_a_fleet_location(fleet):
    gate = fleet["gate"]
    client = ollama.Client(host=f"http://127.0.0.1:{gate.port}", headers={"Authorization": "Bearer k-all"})
    assert sorted(m.model for m in client.list().models) == ALL_MODELS
    before = marks(fleet)
    reply = client.chat(model="qwen3", messages=[{"role": "user", "content": "sky?"}])
    assert reply.message.content.startswith("The sky")
    assert who_answered(fleet, "/api/chat", before) == ["a"]
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="mistral", messages=[{"role": "user", "content": "sky?"}])
    assert missing.value.status_code == 404
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{gate.port}/v1", api_key="k-all", max_retries=0)
    before = marks(fleet)
    completion = sdk.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "sky?"}])
    assert completion.choices[0].message.content.startswith("The sky is blue")
    assert who_answered(fleet, "/v1/chat/completions", before) == ["b"]
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="mistral", messages=[{"role": "user", "content": "sky?"}])


def test_request_model_alone_in_a_map(make_gate):
    """Without a fleet: `$ollama_request_model` read in a gated location routes through `map`."""
    with FakeOllama(models=["x:latest"]) as one, FakeOllama(models=["y:latest"]) as two:
        gate = make_gate()
        gate.write("keys.txt", KEYS)
        gate.configure(f"""
            location / {{
                ollama_bearer_keys_file keys.txt;
                proxy_pass http://$by_model;
            }}
        """, http_extra=f"""
            map $ollama_request_model $by_model {{ default 127.0.0.1:{one.port}; "y:latest" 127.0.0.1:{two.port}; }}
        """, workers=2)
        gate.start()
        assert chat(gate, "Y").status == 200
        assert [s["path"] for s in two.seen] == ["/api/chat"] and one.seen == []
        assert chat(gate, "x").status == 200
        assert [s["path"] for s in one.seen] == ["/api/chat"]
        answer = gate.request("/v1/models/Y", headers={"Authorization": "Bearer k-all"})
        assert answer.status == 200 and two.seen[-1]["path"] == "/v1/models/Y"


@pytest.mark.parametrize("text, named", [
    ("ollama_auth_fleet f interval=abc { server 127.0.0.1:1; }", '"interval=abc"'),
    ("ollama_auth_fleet f { }", "has no \"server\""),
    ("ollama_auth_fleet f { server 127.0.0.1:1 weight=2; }", '"weight=2"'),
    ("ollama_auth_fleet f { upstream 127.0.0.1:1; }", '"upstream"'),
    ("ollama_auth_fleet f timeout=10s interval=1s { server 127.0.0.1:1; }", "timeout="),
])
def test_bad_fleet_configuration_fails_nginx_t_naming_it(make_gate, text, named):
    gate = make_gate()
    gate.configure("location / { return 200; }", http_extra=text)
    code, output = gate.test_config()
    assert code != 0 and named in output, output


def test_using_an_unknown_fleet_fails_nginx_t(make_gate):
    gate = make_gate()
    gate.configure("location / { ollama_auth_use_fleet nope; }")
    code, output = gate.test_config()
    assert code != 0 and '"nope"' in output and "ollama_auth_use_fleet" in output, output


def test_the_shipped_fleet_conf_and_compose_stack(tmp_path):
    """docker/fleet/nginx.conf, made local as the shipped confs are, passes nginx -t; the compose
    stack runs two Ollama servers behind it."""
    import subprocess
    import yaml
    from conftest import ROOT
    subprocess.run([str(ROOT / "nginx-conf/localize.sh"), str(ROOT / "docker/fleet/nginx.conf"), str(tmp_path),
                    module_path(), "127.0.0.1:1", "127.0.0.1:11434"], check=True)
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth/api_keys.txt").write_text("fleet-key team\n")
    result = subprocess.run([nginx_binary(), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-t"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr
    stack = yaml.safe_load((ROOT / "docker/compose.fleet.yml").read_text())["services"]
    assert {"ollama-a", "ollama-b", "nginx"} <= set(stack)
    assert "./fleet/nginx.conf:/etc/nginx/nginx.conf:ro" in stack["nginx"]["volumes"]


def test_request_model_keys_limit_req_before_the_access_phase(make_gate):
    """`limit_req` runs before the access phase: the body is read for it (after the key is
    admitted), so each model has its own bucket."""
    with FakeOllama(models=["x:latest", "y:latest"]) as one:
        gate = make_gate()
        gate.write("keys.txt", KEYS)
        gate.configure(f"""
            location / {{
                ollama_bearer_keys_file keys.txt;
                limit_req zone=per_model nodelay;
                limit_req_status 429;
                proxy_pass http://127.0.0.1:{one.port};
            }}
        """, http_extra="limit_req_zone $ollama_request_model zone=per_model:1m rate=1r/m;", workers=2)
        gate.start()
        assert chat(gate, "x").status == 200
        assert chat(gate, "X:latest").status == 429, "the same model, spelled otherwise"
        assert chat(gate, "y").status == 200, "another model, another bucket"
        assert chat(gate, "x", key="nobody").status == 401, "a stranger is refused, not counted or read"


def test_a_reload_keeps_routing(fleet):
    gate = fleet["gate"]
    gate.reload()
    assert wait_until(lambda: chat(gate, "qwen3").status == 200, 5)
    before = marks(fleet)
    assert chat(gate, "llama3.2").status == 200
    assert who_answered(fleet, "/api/chat", before) == ["b"]
    assert listed(gate) == ALL_MODELS


def test_usage_and_limits_count_per_request_through_a_fleet(make_gate):
    """A fleet location counts usage and enforces a key's limits as a single-Ollama one does."""
    import re
    with FakeOllama(models=["x:latest"]) as one, FakeOllama(models=["y:latest"]) as two:
        gate = make_gate()
        gate.write("keys.txt", KEYS + "k-once once requests=1/1m\n")
        gate.configure("""
            location / {
                ollama_bearer_keys_file keys.txt;
                ollama_auth_usage usage;
                ollama_auth_use_fleet pair;
                proxy_pass http://$ollama_fleet_backend;
            }
            location = /metrics { ollama_auth_metrics usage; }
        """, http_extra=f"""
            ollama_auth_zone usage 1m;
            ollama_auth_fleet pair interval=1s timeout=500ms {{
                server 127.0.0.1:{one.port};
                server 127.0.0.1:{two.port};
            }}
        """, workers=2)
        gate.start()
        assert wait_until(lambda: listed(gate) == ["x:latest", "y:latest"], 10)
        assert chat(gate, "x", headers={"X-Fake-Model": "x:latest"}).status == 200
        assert chat(gate, "y", headers={"X-Fake-Model": "y:latest"}).status == 200
        assert [s["path"] for s in one.seen if s["method"] == "POST"] == ["/api/chat"]
        assert [s["path"] for s in two.seen if s["method"] == "POST"] == ["/api/chat"]
        assert chat(gate, "y", key="k-once").status == 200
        assert chat(gate, "x", key="k-once").status == 429, "the key's limit holds across members"

        def counted():
            text = gate.request("/metrics").body.decode()
            found = re.findall(r'ollama_auth_requests_total\{user="admin",model="([xy]:latest)",code="200"\} (\d+)', text)
            return sorted(found) == [("x:latest", "1"), ("y:latest", "1")]
        assert wait_until(counted, 5), gate.request("/metrics").body.decode()
        # Per member, with the backend label (bounded: the configuration names the members).
        text = gate.request("/metrics").body.decode()
        for port in (one.port, two.port):
            backend = f'fleet="pair",backend="127.0.0.1:{port}"'
            assert f"ollama_auth_backend_up{{{backend}}} 1" in text, text
            assert f"ollama_auth_backend_in_flight{{{backend}}} 0" in text, text
        # x once to the first, y twice to the second; the request the limit refused was never routed.
        for port, count in ((one.port, 1), (two.port, 2)):
            assert f'ollama_auth_backend_requests_total{{fleet="pair",backend="127.0.0.1:{port}"}} {count}' in text, text
