"""Caps on what one request may ask (issue 19), end to end: `ollama_auth_caps` and the keys' own
num_ctx=, num_predict=, keep_alive=, with real nginx and the stand-in Ollama, which records the
body bytes that reach it. Over a cap the stand-in gets the cap and the client the header naming
it; under, the body is byte for byte the client's; unloads need `manage`."""

import json
import socket
import time

import ollama as ollama_python
import openai
import pytest

from conftest import wait_until
from test_basic import basic, htpasswd_line
from test_bearer import PROXY, bearer

CAPS = "ollama_auth_caps num_ctx=8192 num_predict=512 keep_alive=5m..30m;"
KEYS = """\
k-infer inferrer scopes=infer
k-manage manager scopes=read,infer,manage
k-long long-context scopes=infer num_ctx=32768
k-short short scopes=infer num_predict=16
"""
RELOAD_WAIT = 1.1  # a keys file change counts for requests that start a second after it


def start(gate, keys=KEYS, users=None, caps=CAPS, location_extra="", http_extra=""):
    gate.write("keys.txt", keys)
    files = "ollama_bearer_keys_file keys.txt;"
    if users is not None:
        gate.write("users.htpasswd", users)
        files += " ollama_basic_user_file users.htpasswd;"
    gate.configure(f"""
        location / {{
            {files}
            {caps}
            {location_extra}
            {PROXY}
        }}
    """, http_extra=http_extra)
    return gate.start()


def send(gate, who, path, body, headers=None):
    all_headers = dict(who) if isinstance(who, dict) else bearer(who)
    all_headers.update(headers or {})
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return gate.request(path, method="POST", headers=all_headers, body=body)


def forwarded(ollama, before):
    """The one POST body that reached the stand-in since `before`."""
    posts = [seen for seen in ollama.seen[before:] if seen["method"] == "POST"]
    assert len(posts) == 1, posts
    return posts[0]


def go_reads(raw, member, inside_options=False):
    """What Ollama (Go's encoding/json) finally reads: a top-level member (case-insensitive,
    last wins), or a key of the merged top-level `options` objects (exact, last wins)."""
    pairs = json.loads(raw, object_pairs_hook=list)
    if not inside_options:
        value = None
        for name, v in pairs:
            if name.lower() == member:
                value = v
        return value
    merged = {}
    for name, v in pairs:
        if name.lower() == "options":
            if v is None:
                merged = {}
            else:
                for key, inner in v:
                    merged[key] = inner
    return merged.get(member)


# (path, body, member Ollama reads, inside options, what the header names)
OVER = [
    ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "options": {"num_ctx": 131072, "num_predict": 5}}, "num_ctx", True, "num_ctx=8192"),
    ("/api/generate", {"model": "m", "prompt": "hi", "options": {"num_ctx": 65536, "num_predict": 512}},
     "num_ctx", True, "num_ctx=8192"),
    ("/api/embed", {"model": "m", "input": "hi", "options": {"num_ctx": 131072}}, "num_ctx", True, "num_ctx=8192"),
    ("/api/embeddings", {"model": "m", "prompt": "hi", "options": {"num_ctx": 131072}},
     "num_ctx", True, "num_ctx=8192"),
    ("/api/generate", {"model": "m", "prompt": "hi", "options": {"num_predict": -1}},
     "num_predict", True, "num_predict=512"),
    ("/api/chat", {"model": "m", "messages": [], "options": {"num_predict": 100000}},
     "num_predict", True, "num_predict=512"),
    ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
     "num_predict", True, "num_predict=512"),
    ("/api/generate", {"model": "m", "prompt": "hi", "keep_alive": -1, "options": {"num_predict": 5}},
     "keep_alive", False, "keep_alive=30m"),
    ("/api/chat", {"model": "m", "messages": [], "keep_alive": "24h", "options": {"num_predict": 5}},
     "keep_alive", False, "keep_alive=30m"),
    ("/api/embed", {"model": "m", "input": "x", "keep_alive": 10}, "keep_alive", False, "keep_alive=5m"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000},
     "max_tokens", False, "max_tokens=512"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                              "max_completion_tokens": 100000}, "max_tokens", False, "max_tokens=512"),
    ("/v1/completions", {"model": "m", "prompt": "hi", "max_tokens": 4096}, "max_tokens", False, "max_tokens=512"),
    ("/v1/completions", {"model": "m", "prompt": "hi"}, "max_tokens", False, "max_tokens=512"),
    ("/v1/responses", {"model": "m", "input": "hi", "max_output_tokens": 9999},
     "max_output_tokens", False, "max_output_tokens=512"),
    ("/v1/messages", {"model": "m", "max_tokens": 8192, "messages": [{"role": "user", "content": "hi"}]},
     "max_tokens", False, "max_tokens=512"),
]
EXPECTED = {"num_ctx": 8192, "num_predict": 512, "max_tokens": 512, "max_output_tokens": 512}


@pytest.mark.parametrize("stream", [False, True])
def test_every_member_over_the_cap_reaches_ollama_as_the_cap(gate, ollama, stream):
    start(gate, location_extra="access_log {dir}/caps.log caps;",
          http_extra="log_format caps '$ollama_clamped';")
    for path, body, member, inside, named in OVER:
        body = dict(body, stream=stream)
        before = len(ollama.seen)
        response = send(gate, "k-infer", path, body)
        assert response.status == 200, (path, body, response)
        assert response.header("x-ollama-clamped") == named, (path, body)
        sent = forwarded(ollama, before)
        raw = sent["body"]
        assert int(sent["headers"]["Content-Length"]) == len(raw)
        expected = named.split("=")[1] if member == "keep_alive" else EXPECTED[member]
        assert go_reads(raw, member, inside) == expected, (path, body, raw)
        # Everything else as the client sent it.
        others = {k: v for k, v in json.loads(raw).items() if k not in (member, "options")}
        assert others == {k: v for k, v in body.items() if k not in (member, "options")}
    def log():
        path = gate.path("caps.log")
        return path.exists() and path.read_text().count("\n") >= len(OVER) and path.read_text()

    assert wait_until(log, 5), "every request logged"
    assert log().splitlines() == [named for *_, named in OVER], "$ollama_clamped says what the header says"


UNDER = [
    ("/api/chat", b'{"model":"m","messages":[{"role":"user","content":"h\\u00e9"}],\n "options":{"num_ctx":4096,'
                  b'"num_predict":100,"temperature":0.5},"keep_alive":"10m","stream":false}'),
    ("/api/generate", b'{"model":"m","prompt":"x","options":{"num_predict":512},"keep_alive":600}'),
    ("/api/embed", b'{"model":"m","input":["a","b"],"options":{"num_ctx":8192}}'),
    ("/v1/chat/completions", b'{ "model" : "m", "messages":[], "max_tokens" : 512, "stream":true}'),
    ("/v1/completions", b'{"model":"m","prompt":"x","max_tokens":1}'),
    ("/v1/responses", b'{"model":"m","input":"x","max_output_tokens":300}'),
    ("/v1/messages", b'{"model":"m","max_tokens":512,"messages":[]}'),
    ("/v1/embeddings", b'{"model":"m","input":"x","max_tokens":999999}'),
]


def test_under_the_caps_bodies_reach_ollama_byte_for_byte(gate, ollama):
    start(gate)
    for path, body in UNDER:
        before = len(ollama.seen)
        response = send(gate, "k-infer", path, body)
        assert response.status == 200, (path, response)
        assert response.header("x-ollama-clamped") is None, path
        assert forwarded(ollama, before)["body"] == body, path


GO_SPELLINGS = [
    b'{"model":"m","options":{"NUM_CTX":1,"num_ctx":131072}}',
    b'{"model":"m","options":{"num\\u005fctx":131072}}',
    b'{"model":"m","OPTIONS":{"num_ctx":131072}}',
    b'{"model":"m","opti\\u006fns":{"num_ctx":131072}}',
    b'{"model":"m","options":{"num_ctx":100},"Options":{"num_ctx":131072}}',
    b'{"model":"m","options":{"num_ctx":131072},"options":{"num_predict":10}}',
    b'{"model":"m","options":{"num_ctx":131072,"num_ctx":2048}}',
    b'{"model":"m","options":{"num_ctx":131072.9}}',
    b'{"model":"m","options":{"num_ctx":1e9}}',
    b'{"model":"m","messages":[{"role":"user","content":"x","options":{"num_ctx":131072}}],'
    b'"options":{"num_ctx":131072}}',
    b'{"model":"m","format":{"options":{"num_ctx":131072}},"options":{"num_ctx":99999}}',
]


def test_go_json_spellings_never_let_a_value_over_the_cap_through(gate, ollama):
    start(gate)
    for body in GO_SPELLINGS:
        before = len(ollama.seen)
        response = send(gate, "k-infer", "/api/generate", body)
        assert response.status == 200, (body, response)
        raw = forwarded(ollama, before)["body"]
        ctx = go_reads(raw, "num_ctx", inside_options=True)
        assert ctx is None or ctx <= 8192, (body, raw)
        predict = go_reads(raw, "num_predict", inside_options=True)
        assert predict is not None and 0 <= predict <= 512, (body, raw)
    # Keep-alive spellings: every one Go would apply lies in the range, so the last does.
    for body in [b'{"model":"m","KEEP_ALIVE":-1}', b'{"model":"m","keep_alive":"5m","Keep_Alive":"-1s"}',
                 b'{"model":"m","keep\\u005falive":1e300}']:
        before = len(ollama.seen)
        assert send(gate, "k-infer", "/api/embed", body).status == 200, body
        assert go_reads(forwarded(ollama, before)["body"], "keep_alive") == "30m", body
    # What Go would refuse, the gate refuses: nothing over the cap can hide in it.
    for body in [b'{"model":"m","options":"num_ctx=131072"}', b'{"model":"m","options":{"num_ctx":"131072"}}',
                 b'{"model":"m"} {"options":{"num_ctx":131072}}', b'{"model":"m","keep_alive":"forever"}']:
        before = len(ollama.seen)
        response = send(gate, "k-infer", "/api/generate", body)
        assert response.status == 400, (body, response)
        assert len(ollama.seen) == before


UNLOADS = [
    ("/api/generate", {"model": "m", "keep_alive": 0}),
    ("/api/generate", {"model": "m", "prompt": "", "keep_alive": "0s"}),
    ("/api/chat", {"model": "m", "messages": [], "keep_alive": -0.0}),
    ("/api/chat", {"model": "m", "keep_alive": "-0s"}),
    ("/api/generate", {"model": "m", "prompt": "still an unload afterwards", "keep_alive": "0"}),
    ("/api/embed", {"model": "m", "input": "x", "keep_alive": 0}),
    ("/api/generate", {"model": "m", "keep_alive": "10m", "KEEP_ALIVE": 0}),
]


def test_unloading_needs_the_manage_scope(gate, ollama):
    start(gate, users=htpasswd_line("-m", "alice", "pw") + ":scopes=infer\n")
    for path, body in UNLOADS:
        before = len(ollama.seen)
        response = send(gate, "k-infer", path, body)
        assert response.status == 403, (path, body, response)
        assert "manage" in response.json()["error"] and "this key does not have it" in response.json()["error"]
        assert len(ollama.seen) == before, "nothing reached the stand-in"
        before = len(ollama.seen)
        assert send(gate, "k-manage", path, body).status == 200, (path, body)
        raw = forwarded(ollama, before)["body"]
        assert go_reads(raw, "keep_alive") == body.get("KEEP_ALIVE", body["keep_alive"]), "a manage key may unload"
    response = send(gate, basic("alice", "pw"), "/api/generate", {"model": "m", "keep_alive": 0})
    assert response.status == 403 and "this user does not have it" in response.json()["error"]
    # The OpenAI shape on /v1 is not involved: keep_alive is not read there.
    response = send(gate, "k-infer", "/v1/chat/completions", {"model": "m", "messages": [], "keep_alive": 0,
                                                                "max_tokens": 5})
    assert response.status == 200


def test_a_keys_caps_beat_the_locations_for_users_too_and_hot_edits_count(gate, ollama):
    users = htpasswd_line("-m", "bob", "pw") + ":scopes=infer num_ctx=16384\n"
    start(gate, users=users)
    big = {"model": "m", "prompt": "x", "options": {"num_ctx": 131072, "num_predict": 1000}}

    def reads(who):
        before = len(ollama.seen)
        response = send(gate, who, "/api/generate", big)
        assert response.status == 200, response
        raw = forwarded(ollama, before)["body"]
        return go_reads(raw, "num_ctx", True), go_reads(raw, "num_predict", True), response.header("x-ollama-clamped")

    assert reads("k-infer") == (8192, 512, "num_ctx=8192, num_predict=512")
    assert reads("k-long") == (32768, 512, "num_ctx=32768, num_predict=512")
    assert reads("k-short") == (8192, 16, "num_ctx=8192, num_predict=16")
    assert reads(basic("bob", "pw")) == (16384, 512, "num_ctx=16384, num_predict=512")
    time.sleep(RELOAD_WAIT)
    gate.write("keys.txt", KEYS.replace("k-infer inferrer scopes=infer", "k-infer inferrer scopes=infer num_ctx=2048"))
    time.sleep(RELOAD_WAIT)
    assert reads("k-infer")[0] == 2048, "a hot edit counts without a reload"


def test_bad_caps_fail_nginx_t_and_bad_key_lines_are_skipped(gate, ollama):
    for caps, named in [("ollama_auth_caps num_ctx=0;", "num_ctx=0"),
                        ("ollama_auth_caps keep_alive=30m..5m;", "keep_alive=30m..5m"),
                        ("ollama_auth_caps max_ctx=1;", "max_ctx=1"),
                        ("ollama_auth_caps num_ctx=8k;", "num_ctx=8k")]:
        gate.write("keys.txt", KEYS)
        gate.configure(f"location / {{ ollama_bearer_keys_file keys.txt; {caps} {PROXY} }}")
        code, output = gate.test_config()
        assert code != 0, caps
        assert '"ollama_auth_caps"' in output and named in output, output
    start(gate, keys=KEYS + "k-bad bad scopes=infer num_ctx=lots\n")
    assert send(gate, "k-bad", "/api/generate", {"model": "m"}).status == 401
    assert 'option "num_ctx": not a whole number' in gate.error_log()
    assert "k-bad" not in gate.error_log()


def test_off_and_inheritance(gate, ollama):
    gate.write("keys.txt", KEYS)
    gate.configure(f"""
        ollama_auth_caps num_ctx=1024;
        location / {{ ollama_bearer_keys_file keys.txt; {PROXY} }}
        location /free/ {{ ollama_bearer_keys_file keys.txt; ollama_auth_caps off; ollama_auth_path_prefix /free;
                          proxy_pass http://{{upstream}}/; }}
    """)
    gate.start()
    body = b'{"model":"m","options":{"num_ctx":131072}}'
    before = len(ollama.seen)
    assert send(gate, "k-infer", "/api/embed", body).status == 200
    assert go_reads(forwarded(ollama, before)["body"], "num_ctx", True) == 1024
    before = len(ollama.seen)
    assert send(gate, "k-infer", "/free/api/embed", body).status == 200
    assert forwarded(ollama, before)["body"] == body
    before = len(ollama.seen)
    assert send(gate, "k-long", "/free/api/embed", body).status == 200
    assert go_reads(forwarded(ollama, before)["body"], "num_ctx", True) == 32768, "a key's own cap holds anywhere"


def test_clamped_bodies_spilled_chunked_and_expect_continue(gate, ollama):
    start(gate, location_extra="client_body_buffer_size 1k; client_max_body_size 30m;")
    body = json.dumps({"model": "m", "prompt": "é" * 5000, "options": {"num_ctx": 131072}},
                      ensure_ascii=False).encode()
    clamped = body.replace(b'"num_ctx": 131072', b'"num_ctx": 8192')
    before = len(ollama.seen)
    assert send(gate, "k-manage", "/api/generate", body).status == 200
    sent = forwarded(ollama, before)
    assert sent["body"] == clamped[:-1] + b',"options":{"num_predict":512}}'
    assert int(sent["headers"]["Content-Length"]) == len(sent["body"])
    assert "client request body is buffered to a temporary file" in gate.error_log()
    before = len(ollama.seen)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 700]), body[i:i + 700]) for i in range(0, len(body), 700))
    answer = gate.raw(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k-manage\r\n"
                      b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"x-ollama-clamped: num_ctx=8192, num_predict=512" in answer
    assert go_reads(forwarded(ollama, before)["body"], "num_ctx", True) == 8192
    before = len(ollama.seen)
    with socket.create_connection(("127.0.0.1", gate.port), timeout=10) as s:
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k-manage\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert go_reads(forwarded(ollama, before)["body"], "num_ctx", True) == 8192


def test_bodies_are_read_only_where_a_cap_applies(gate, ollama):
    """With proxy_request_buffering off, a body nobody reads reaches the stand-in while the
    client is still sending it; a body the gate read reaches it only once whole."""
    start(gate, caps="ollama_auth_caps num_ctx=8192;",
          location_extra="client_max_body_size 50m; proxy_request_buffering off;")

    def reaches_ollama_before_the_body_ends(path):
        before = len(ollama.seen)
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k-manage\r\n"
                f"Content-Length: 2000\r\nConnection: close\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", gate.port), timeout=10) as s:
            s.sendall(head + b'{"model":"m","x":"' + b"y" * 500)
            early = wait_until(lambda: len(ollama.seen) > before, 2)
            s.sendall(b"y" * (2000 - 518 - 2) + b'"}')
            s.recv(100)
        return bool(early)

    assert not reaches_ollama_before_the_body_ends("/api/chat"), "a capped endpoint's body is read first"
    assert reaches_ollama_before_the_body_ends("/v1/chat/completions"), "num_ctx does not apply on /v1"
    assert reaches_ollama_before_the_body_ends("/v1/embeddings"), "no cap applies"
    assert reaches_ollama_before_the_body_ends("/api/pull"), "not a capped endpoint"


def test_real_clients_get_their_answers(gate, ollama):
    start(gate)
    client = ollama_python.Client(host=f"http://127.0.0.1:{gate.port}", headers={"Authorization": "Bearer k-infer"})
    before = len(ollama.seen)
    answer = client.generate(model="m", prompt="hi", options={"num_ctx": 131072, "temperature": 0.2})
    assert answer.done
    raw = forwarded(ollama, before)["body"]
    assert go_reads(raw, "num_ctx", True) == 8192 and go_reads(raw, "temperature", True) == 0.2
    before = len(ollama.seen)
    parts = list(client.chat(model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
                             options={"num_predict": -1}, keep_alive=-1))
    assert parts[-1].done
    raw = forwarded(ollama, before)["body"]
    assert (go_reads(raw, "num_predict", True), go_reads(raw, "keep_alive")) == (512, "30m")
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{gate.port}/v1", api_key="k-infer", max_retries=0)
    before = len(ollama.seen)
    completion = sdk.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=100000)
    assert completion.headers["x-ollama-clamped"] == "max_tokens=512"
    assert completion.parse().choices[0].message.content
    assert go_reads(forwarded(ollama, before)["body"], "max_tokens") == 512
    before = len(ollama.seen)
    stream = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
                                         max_tokens=100000)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert go_reads(forwarded(ollama, before)["body"], "max_tokens") == 512


def test_caps_and_the_usage_rewrite_compose(gate, ollama):
    """Where usage is counted the gate also adds stream_options.include_usage to a streamed /v1
    request: both rewrites reach Ollama, and the client's answer has no usage it did not ask for."""
    start(gate, keys=KEYS + "k-counted counted scopes=infer requests=100/1m\n",
          location_extra="ollama_auth_usage lim;", http_extra="ollama_auth_zone lim 1m;")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 100000}
    before = len(ollama.seen)
    response = send(gate, "k-counted", "/v1/chat/completions", body)
    assert response.status == 200
    assert response.header("x-ollama-clamped") == "max_tokens=512"
    raw = forwarded(ollama, before)["body"]
    assert go_reads(raw, "max_tokens") == 512
    assert json.loads(raw)["stream_options"] == {"include_usage": True}
    assert b'"usage"' not in response.body, "the usage the gate asked for is taken out again"
    assert response.header("x-ratelimit-remaining-requests") == "99"


def test_the_cli_writes_caps_and_key_set_changes_them_without_a_reload(gate, ollama):
    from test_cli import cli, fingerprint, new_key

    start(gate)
    path = gate.path("keys.txt")
    key, _ = new_key(path, "long context", "--scopes", "infer", "--num-ctx", "32768", "--keep-alive", "1m..1h")
    assert path.read_text().endswith(" long context scopes=infer num_ctx=32768 keep_alive=1m..1h\n")
    body = {"model": "m", "input": "x", "options": {"num_ctx": 131072}}

    def num_ctx_read():
        before = len(ollama.seen)
        assert send(gate, key, "/api/embed", body).status == 200
        return go_reads(forwarded(ollama, before)["body"], "num_ctx", True)

    assert wait_until(lambda: num_ctx_read() == 32768, 3)
    before_set = path.read_text()
    result = cli("key", "set", fingerprint(key), "--num-ctx", "2048", "--file", path)
    assert result.returncode == 0, result.stderr
    assert path.read_text() == before_set.replace(" long context scopes=infer num_ctx=32768", " long context scopes=infer num_ctx=2048"), \
        "other lines and options stay"
    assert wait_until(lambda: num_ctx_read() == 2048, 3), "key set counts without a reload"
    refused = cli("key", "set", "long context", "--keep-alive", "0s", "--file", path)
    assert refused.returncode == 2 and "--keep-alive: must be a whole number of seconds" in refused.stderr
    assert cli("key", "set", "nobody", "--num-ctx", "1", "--file", path).returncode == 1
    listed = json.loads(cli("key", "list", "--json", "--file", path).stdout)
    assert [entry["caps"] for entry in listed["keys"] if entry["name"] == "long context"] == \
        ["num_ctx=2048 keep_alive=1m..1h"]


def test_a_key_with_models_gets_both_checks_on_one_read(gate, ollama):
    start(gate, keys=KEYS + "k-gemma gemma-only scopes=infer models=gemma3\n")
    before = len(ollama.seen)
    response = send(gate, "k-gemma", "/api/embed", {"model": "llama3", "options": {"num_ctx": 131072}})
    assert response.status == 403 and "llama3" in response.json()["error"]
    assert len(ollama.seen) == before
    response = send(gate, "k-gemma", "/api/embed", {"model": "gemma3", "options": {"num_ctx": 131072}})
    assert response.status == 200 and response.header("x-ollama-clamped") == "num_ctx=8192"
    assert go_reads(forwarded(ollama, before)["body"], "num_ctx", True) == 8192
