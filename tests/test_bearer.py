"""The bearer gate, end to end: a real nginx with the module, real files, real HTTP."""

import hashlib
import json
import os
import time

import pytest

from conftest import wait_until

SEED_KEYS = "my-secret-api-key-1\nadmin-key-abcdef\n"

PROXY = """
        proxy_pass http://{upstream};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Authorization "";
        proxy_buffering off;
"""


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def gated(gate, keys=SEED_KEYS, location_extra="", server_extra="", http_extra="", workers=1):
    gate.write("keys.txt", keys)
    gate.configure(f"""
        {server_extra}
        location / {{
            ollama_bearer_keys_file keys.txt;
            {location_extra}
            {PROXY}
        }}
    """, http_extra=http_extra, workers=workers)
    return gate.start()


def test_seed_keys_file_admits_its_keys_and_refuses_strangers(gate, ollama):
    gated(gate)
    for key in ["my-secret-api-key-1", "admin-key-abcdef"]:
        response = gate.request("/api/tags", headers=bearer(key))
        assert response.status == 200, response
        assert response.json()["models"][0]["name"] == "gemma3:1b"
    for headers in [{}, bearer("invalid-key"), bearer("my-secret-api-key-"), bearer("my-secret-api-key-12")]:
        response = gate.request("/api/tags", headers=headers)
        assert response.status == 401, (headers, response)


def test_401_has_bearer_challenge_and_ollama_error_json(gate):
    gated(gate)
    response = gate.request("/api/generate", method="POST", body='{"model":"gemma3:1b","prompt":"hi"}')
    assert response.status == 401
    assert response.header_all("WWW-Authenticate") == ['Bearer realm="ollama"']
    assert response.header("Content-Type").startswith("application/json")
    assert "error" in response.json() and "unauthorized" in response.json()["error"]
    assert int(response.header("Content-Length")) == len(response.body)
    head = gate.request("/api/tags", method="HEAD")
    assert head.status == 401 and head.body == b""
    assert head.header("WWW-Authenticate") == 'Bearer realm="ollama"'


def test_denied_post_keeps_the_connection_usable(gate):
    """The request body of a refused request is discarded, so keep-alive goes on cleanly."""
    gated(gate)
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=5)
    body = json.dumps({"model": "gemma3:1b", "prompt": "x" * 50_000, "stream": False})
    connection.request("POST", "/api/generate", body=body)
    first = connection.getresponse()
    first.read()
    connection.request("GET", "/api/tags", headers=bearer("admin-key-abcdef"))
    second = connection.getresponse()
    assert (first.status, second.status) == (401, 200)
    assert json.loads(second.read())["models"]
    connection.close()


@pytest.mark.parametrize("header", [
    "bearer admin-key-abcdef", "BEARER admin-key-abcdef", "Bearer    admin-key-abcdef",
])
def test_scheme_is_case_insensitive_and_spaces_are_one_or_more(gate, header):
    gated(gate)
    assert gate.request("/api/tags", headers={"Authorization": header}).status == 200


@pytest.mark.parametrize("headers,path", [
    ({"Authorization": "Basic admin-key-abcdef"}, "/api/tags"),
    ({"Authorization": "Token admin-key-abcdef"}, "/api/tags"),
    ({"Authorization": "admin-key-abcdef"}, "/api/tags"),
    ({"Authorization": "xBearer admin-key-abcdef"}, "/api/tags"),
    ({"Authorization": "Bearer admin-key-abcdef extra"}, "/api/tags"),
    ({"Authorization": "Bearer admin-key-abcdef, Bearer my-secret-api-key-1"}, "/api/tags"),
    ({"Authorization": "Bearer admin-key-abcdef,Basic eDp5"}, "/api/tags"),
    ({"Authorization": "Bearer"}, "/api/tags"),
    ({"Authorization": "Bearer "}, "/api/tags"),
    ({"Authorization": "Bearer\tadmin-key-abcdef"}, "/api/tags"),
    ({"Authorization": "Bearer \tadmin-key-abcdef"}, "/api/tags"),
    ({}, "/api/tags?key=admin-key-abcdef"),
    ({}, "/api/tags?api_key=admin-key-abcdef&access_token=admin-key-abcdef"),
    ({"X-Api-Key": "admin-key-abcdef"}, "/api/tags"),
    ({"Proxy-Authorization": "Bearer admin-key-abcdef"}, "/api/tags"),
    ({"Cookie": "token=admin-key-abcdef"}, "/api/tags"),
])
def test_keys_only_count_from_one_bearer_credential_in_authorization(gate, headers, path):
    gated(gate)
    assert gate.request(path, headers=headers).status == 401


def test_streamed_generate_and_chat_pass_through_intact_and_unbuffered(gate, ollama):
    gated(gate)
    import http.client
    for path, field in [("/api/generate", "response"), ("/api/chat", "message")]:
        connection = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)
        connection.request("POST", path, body=json.dumps({"model": "gemma3:1b", "prompt": "sky?"}),
                           headers=bearer("my-secret-api-key-1"))
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/x-ndjson"
        arrivals, lines = [], []
        while True:
            line = response.readline()
            if not line:
                break
            arrivals.append(time.monotonic())
            lines.append(json.loads(line))
        connection.close()
        assert len(lines) == 10 and lines[-1]["done"] is True
        text = "".join(l["response"] if field == "response" else l["message"]["content"] for l in lines)
        assert text == "The sky is blue because of Rayleigh scattering."
        # Unbuffered: the first line arrived well before the last (the stand-in waits 20 ms per line).
        assert arrivals[-1] - arrivals[0] > 0.1


def test_credential_is_not_forwarded_to_ollama(gate, ollama):
    gated(gate)
    before = len(ollama.seen)
    assert gate.request("/api/tags", headers=bearer("admin-key-abcdef")).status == 200
    forwarded = ollama.seen[before:]
    assert len(forwarded) == 1
    assert "Authorization" not in forwarded[0]["headers"]


def test_refused_requests_never_reach_ollama(gate, ollama):
    gated(gate)
    before = len(ollama.seen)
    for headers in [{}, bearer("nope"), {"Authorization": "Basic eDp5"}]:
        assert gate.request("/api/generate", method="POST", body="{}", headers=headers).status == 401
    assert len(ollama.seen) == before


def test_inheritance_off_in_nested_location_and_realm(gate):
    gate.write("keys.txt", SEED_KEYS)
    gate.configure(f"""
        ollama_bearer_keys_file keys.txt;
        ollama_auth_realm 'My "Ollama" \\\\ box';
        location / {{ {PROXY} }}
        location /open/ {{
            ollama_bearer_keys_file off;
            alias {{dir}}/html/;
        }}
        location /static/ {{
            alias {{dir}}/html/;
            ollama_auth_default_scopes all;
            location /static/inner/ {{ alias {{dir}}/html/; ollama_auth_realm inner; }}
        }}
    """)
    gate.start()
    assert gate.request("/api/tags").status == 401
    assert gate.request("/api/tags", headers=bearer("admin-key-abcdef")).status == 200
    assert gate.request("/open/index.html").status == 200
    assert gate.request("/static/index.html").status == 401
    assert gate.request("/static/index.html", headers=bearer("admin-key-abcdef")).body == b"static ok\n"
    response = gate.request("/static/index.html")
    assert response.header("WWW-Authenticate") == 'Bearer realm="My \\"Ollama\\" \\\\ box"'
    inner = gate.request("/static/inner/index.html")
    assert inner.status == 401 and inner.header("WWW-Authenticate") == 'Bearer realm="inner"'


def test_auth_user_variable_is_name_or_fingerprint_never_the_key(gate):
    keys = "named-key-1 CI bot\nunnamed-key-2\nsha256:%s hashed-user\n" % hashlib.sha256(b"hidden-3").hexdigest()
    gated(gate, keys=keys, http_extra="log_format who '[$ollama_auth_user]';",
          location_extra="access_log {dir}/who.log who;".replace("{dir}", str(gate.dir)))
    for key in ["named-key-1", "unnamed-key-2", "hidden-3", "wrong"]:
        gate.request("/api/tags", headers=bearer(key))
    gate.request("/api/tags")
    def logged():
        lines = gate.path("who.log").read_text().splitlines() if gate.path("who.log").exists() else []
        return lines if len(lines) >= 5 else None
    lines = wait_until(logged, 5) or gate.path("who.log").read_text().splitlines()
    fingerprint = "sha256:" + hashlib.sha256(b"unnamed-key-2").hexdigest()[:12]
    assert lines == ["[CI bot]", f"[{fingerprint}]", "[hashed-user]", "[]", "[]"]
    everything = gate.path("who.log").read_text() + gate.error_log() + gate.path("access.log").read_text()
    for secret in ["named-key-1", "unnamed-key-2", "hidden-3", "wrong"]:
        assert secret not in everything


def test_limit_req_keyed_by_user_applies_per_key(gate):
    """limit_req runs before the access phase: the variable checks the credential on demand."""
    gated(gate, http_extra="limit_req_zone $ollama_auth_user zone=per_user:1m rate=1r/m;",
          location_extra="limit_req zone=per_user; limit_req_status 429;")
    assert gate.request("/api/tags", headers=bearer("admin-key-abcdef")).status == 200
    assert gate.request("/api/tags", headers=bearer("admin-key-abcdef")).status == 429
    assert gate.request("/api/tags", headers=bearer("my-secret-api-key-1")).status == 200
    # Strangers have an empty key, which limit_req does not count; they are refused by the gate.
    assert gate.request("/api/tags", headers=bearer("stranger")).status == 401


def hashed_entry(key, name=""):
    """The documented one-liner: printf '%s' KEY | sha256sum | awk '{print "sha256:" $1}'."""
    import subprocess
    line = subprocess.run(["sh", "-c", "printf '%s' \"$1\" | sha256sum | awk '{print \"sha256:\" $1}'", "sh", key],
                          capture_output=True, text=True, check=True).stdout.strip()
    return f"{line} {name}".strip()


def test_hashed_keys_file_made_with_the_documented_pipeline(gate):
    gated(gate, keys=hashed_entry("team-key-xyz", "team") + "\n")
    assert gate.request("/api/tags", headers=bearer("team-key-xyz")).status == 200
    assert gate.request("/api/tags", headers=bearer(hashed_entry("team-key-xyz").split()[0])).status == 401


def test_make_hashed_key_target(tmp_path):
    import subprocess
    out = subprocess.run(["make", "-s", "-C", str(os.path.dirname(os.path.dirname(__file__))), "hashed-key",
                          "KEY=team-key-xyz", "NAME=team"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "sha256:%s team" % hashlib.sha256(b"team-key-xyz").hexdigest()


def test_bad_lines_are_skipped_with_file_and_line_but_no_content(gate):
    gated(gate, keys="good-key\nbad\x01secret-part\nsha256:nothex\n# comment\n\ngood-key-2 named\n")
    assert gate.request("/api/tags", headers=bearer("good-key")).status == 200
    assert gate.request("/api/tags", headers=bearer("good-key-2")).status == 200
    log = gate.error_log()
    assert f'"{gate.dir}/keys.txt" line 2 skipped: control character' in log
    assert f'"{gate.dir}/keys.txt" line 3 skipped: sha256:' in log
    assert "secret-part" not in log and "nothex" not in log


def test_empty_file_admits_no_one(gate):
    gated(gate, keys="")
    assert gate.request("/api/tags", headers=bearer("")).status == 401
    assert gate.request("/api/tags", headers=bearer("anything")).status == 401


def test_satisfy_any_with_allow_admits_without_a_stale_challenge(gate):
    gated(gate, location_extra="satisfy any; allow 127.0.0.1; deny all;")
    response = gate.request("/api/tags")
    assert response.status == 200
    assert response.header("WWW-Authenticate") is None


def test_satisfy_any_leaves_an_upstreams_own_401_alone(gate):
    """allow admits a request the module refused: the upstream's 401 is the upstream's, and gets
    neither this module's JSON body nor a Bearer challenge."""
    gated(gate, location_extra="satisfy any; allow 127.0.0.1; deny all;")
    for headers in [{}, bearer("admin-key-abcdef")]:
        response = gate.request("/upstream-401", headers=headers)
        assert response.status == 401
        assert response.body == b"upstream says no", response
        assert response.header_all("WWW-Authenticate") == ['Upstream realm="inner"']
        assert response.header("Content-Type") == "text/plain"


def test_satisfy_any_with_deny_still_takes_a_key(gate):
    gated(gate, location_extra="satisfy any; deny all;")
    assert gate.request("/api/tags", headers=bearer("admin-key-abcdef")).status == 200
    refused = gate.request("/api/tags")
    assert refused.status == 401 and refused.header("WWW-Authenticate") == 'Bearer realm="ollama"'


def test_satisfy_all_with_deny_forbids_even_a_good_key(gate):
    gated(gate, location_extra="deny all;")
    assert gate.request("/api/tags", headers=bearer("admin-key-abcdef")).status == 403


def test_auth_delay_applies_to_refusals_only(gate):
    gated(gate, location_extra="auth_delay 600ms;")
    start = time.monotonic()
    assert gate.request("/api/tags", headers=bearer("wrong")).status == 401
    assert time.monotonic() - start >= 0.55
    start = time.monotonic()
    assert gate.request("/api/tags", headers=bearer("admin-key-abcdef")).status == 200
    assert time.monotonic() - start < 0.5


def test_error_page_can_replace_the_json_body(gate):
    gated(gate, location_extra="error_page 401 /custom401.json;",
          server_extra="location = /custom401.json { internal; alias {dir}/html/index.html; }".replace("{dir}", str(gate.dir)))
    response = gate.request("/api/tags")
    assert response.status == 401 and response.body == b"static ok\n"


def test_subrequests_share_the_main_request_admission(gate):
    """An SSI include of a location gated by another file: core nginx skips subrequests' access
    phase, and the module must not check them itself."""
    gate.write("keys.txt", SEED_KEYS)
    gate.write("other.txt", "some-other-key\n")
    gate.write("html/page.html", 'before <!--# include virtual="/inner/index.html" --> after\n')
    gate.configure("""
        location / { ollama_bearer_keys_file keys.txt; ollama_auth_default_scopes all; ssi on; }
        location /inner/ { ollama_bearer_keys_file other.txt; alias {dir}/html/; }
    """)
    gate.start()
    response = gate.request("/page.html", headers=bearer("admin-key-abcdef"))
    assert response.status == 200
    assert response.body == b"before static ok\n after\n"


def test_relative_path_resolves_against_the_configuration_directory(gate):
    gate.write("conf.d/keys.txt", "relative-key\n")
    gate.configure(f"location / {{ ollama_bearer_keys_file conf.d/keys.txt; {PROXY} }}")
    gate.start()
    assert gate.request("/api/tags", headers=bearer("relative-key")).status == 200
