"""Basic auth from htpasswd files written by Apache's htpasswd, and Bearer-or-Basic on one location."""

import base64
import hashlib
import os
import subprocess
import time

import pytest

from conftest import wait_until
from test_bearer import PROXY, bearer

PASSWORD = "p:ss wörd"  # a colon, a space and non-ASCII


def htpasswd_line(flag, user, password, *extra):
    out = subprocess.run(["htpasswd", "-nb", flag, *extra, user, password],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def basic(user, password):
    raw = (user if isinstance(user, bytes) else user.encode()) + b":" + \
          (password if isinstance(password, bytes) else password.encode())
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def start(gate, users, keys=None, location_extra="", workers=1):
    gate.write("users.htpasswd", users)
    directives = "ollama_basic_user_file users.htpasswd;"
    if keys is not None:
        gate.write("keys.txt", keys)
        directives += " ollama_bearer_keys_file keys.txt;"
    gate.configure(f"location / {{ {directives} {location_extra} {PROXY} }}", workers=workers,
                   http_extra="log_format who escape=none '[$ollama_auth_user]'; access_log {dir}/who.log who;")
    return gate.start()


FORMATS = [("-m", "apr1"), ("-B", "bcrypt"), ("-2", "sha256-crypt"), ("-5", "sha512-crypt"), ("-s", "sha1")]


@pytest.mark.parametrize("flag,name", FORMATS)
def test_every_htpasswd_format_right_and_wrong_password(gate, flag, name):
    extra = ["-C", "5"] if flag == "-B" else []
    users = "\n".join([htpasswd_line(flag, "jürgen", PASSWORD, *extra), htpasswd_line(flag, "bob", "builder", *extra)])
    start(gate, users + "\n")
    assert gate.request("/api/tags", headers=basic("jürgen", PASSWORD)).status == 200
    assert gate.request("/api/tags", headers=basic("bob", "builder")).status == 200
    for user, password in [("jürgen", "p:ss word"), ("jürgen", "p"), ("bob", PASSWORD), ("Bob", "builder"), ("alice", "builder")]:
        assert gate.request("/api/tags", headers=basic(user, password)).status == 401, (user, password)


def test_ssha_and_plain_as_stock_nginx_reads_them(gate):
    salt = b"s4lt"
    ssha = base64.b64encode(hashlib.sha1(b"salted" + salt).digest() + salt).decode()
    start(gate, f"s:{{SSHA}}{ssha}\np:{{PLAIN}}plain-pw\n")
    assert gate.request("/api/tags", headers=basic("s", "salted")).status == 200
    assert gate.request("/api/tags", headers=basic("p", "plain-pw")).status == 200
    assert gate.request("/api/tags", headers=basic("s", "salte")).status == 401
    assert gate.request("/api/tags", headers=basic("p", "plain-p")).status == 401


def test_des_plaintext_and_unknown_are_skipped_with_file_line_and_user(gate):
    users = "\n".join([
        htpasswd_line("-d", "desuser", "secret1"),
        subprocess.run(["htpasswd", "-nbp", "plainuser", "secret2"], capture_output=True, text=True).stdout.strip(),
        "argon:$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        htpasswd_line("-m", "gooduser", "secret3"),
    ]) + "\n"
    start(gate, users)
    assert gate.request("/api/tags", headers=basic("gooduser", "secret3")).status == 200
    assert gate.request("/api/tags", headers=basic("desuser", "secret1")).status == 401
    assert gate.request("/api/tags", headers=basic("plainuser", "secret2")).status == 401
    log = gate.error_log()
    file = f'basic user file "{gate.dir}/users.htpasswd"'
    assert f'{file} line 1 skipped: user "desuser": DES crypt' in log
    assert f'{file} line 2 skipped: user "plainuser": unknown hash format or plaintext' in log
    assert f'{file} line 3 skipped: user "argon": unknown hash format' in log
    assert "secret2" not in log and "argon2id" not in log


def test_too_costly_hashes_are_skipped_at_load(gate):
    users = "\n".join([
        htpasswd_line("-B", "costly", "pw", "-C", "13"),
        htpasswd_line("-5", "rounds", "pw", "-r", "1000000"),
        htpasswd_line("-B", "fine", "pw", "-C", "4"),
    ]) + "\n"
    start(gate, users)
    log = gate.error_log()
    assert 'line 1 skipped: user "costly": bcrypt cost 13: too costly' in log
    assert 'line 2 skipped: user "rounds": SHA-512 crypt with 1000000 rounds: too costly' in log
    start_time = time.monotonic()
    assert gate.request("/api/tags", headers=basic("costly", "pw")).status == 401
    assert time.monotonic() - start_time < 1.0
    assert gate.request("/api/tags", headers=basic("fine", "pw")).status == 200


@pytest.mark.parametrize("header", [
    "Basic", "Basic ", "Basic !!!notbase64!!!", "Basic " + base64.b64encode(b"nocolon").decode(),
    "Basic " + base64.b64encode(b":emptyuser").decode(), "Basic " + base64.b64encode(b"u:p").decode() + " trailing",
    "Basic " + base64.b64encode(b"u:p").decode() + "===", "Basic " + "A" * 6000,
    "Basic " + base64.b64encode(b"\xff\xfe:\x00\x01").decode(), "Basic =", "Basic\t" + "%%%%",
    "Basic\t" + base64.b64encode(b"u:p").decode(), "Basic \t" + base64.b64encode(b"u:p").decode(),
])
def test_malformed_basic_credentials_get_401_never_400_or_500(gate, header):
    start(gate, htpasswd_line("-m", "u", "p") + "\n")
    response = gate.request("/api/tags", headers={"Authorization": header})
    assert response.status == 401
    assert response.header("WWW-Authenticate") == 'Basic realm="ollama"'


def test_nul_in_password_counts(gate):
    """Stock nginx stops at the NUL and admits "p\\0anything" for password "p"."""
    start(gate, htpasswd_line("-m", "u", "pw") + "\n" + "v:{PLAIN}pw\n")
    assert gate.request("/api/tags", headers=basic("u", b"pw")).status == 200
    assert gate.request("/api/tags", headers=basic("u", b"pw\x00")).status == 401
    assert gate.request("/api/tags", headers=basic("u", b"pw\x00junk")).status == 401
    assert gate.request("/api/tags", headers=basic("v", b"pw\x00junk")).status == 401


def test_user_name_is_the_variable_and_passwords_never_logged(gate):
    start(gate, htpasswd_line("-m", "jürgen", PASSWORD) + "\n")
    gate.request("/api/tags", headers=basic("jürgen", PASSWORD))
    gate.request("/api/tags", headers=basic("jürgen", "wrong-pass-123"))
    gate.request("/api/tags", headers=basic("nobody-here", "other-pass-456"))

    lines = wait_until(lambda: len(gate.path("who.log").read_bytes().decode().splitlines()) >= 3
                       and gate.path("who.log").read_bytes().decode().splitlines(), 5)
    assert lines[0] == "[jürgen]" and lines[1:] == ["[]", "[]"]
    log = gate.error_log()
    assert 'user "jürgen": password mismatch' in log
    assert 'user "nobody-here" was not found' in log
    everything = log + gate.path("access.log").read_text() + gate.path("who.log").read_text()
    for secret in [PASSWORD, "wrong-pass-123", "other-pass-456"]:
        assert secret not in everything


def test_password_change_and_removal_seen_within_one_second_after_cached_successes(gate):
    start(gate, htpasswd_line("-B", "alice", "old-pw", "-C", "4") + "\n" + htpasswd_line("-m", "bob", "b") + "\n", workers=2)
    for _ in range(10):  # cached in both workers
        assert gate.request("/api/tags", headers=basic("alice", "old-pw")).status == 200
    gate.write("users.htpasswd.new", htpasswd_line("-B", "alice", "new-pw", "-C", "4") + "\n")
    os.rename(gate.path("users.htpasswd.new"), gate.path("users.htpasswd"))
    time.sleep(1.0)
    for _ in range(10):
        assert gate.request("/api/tags", headers=basic("alice", "old-pw")).status == 401
        assert gate.request("/api/tags", headers=basic("alice", "new-pw")).status == 200
        assert gate.request("/api/tags", headers=basic("bob", "b")).status == 401


def test_bearer_or_basic_on_one_location(gate):
    start(gate, htpasswd_line("-m", "myuser", "mypassword") + "\n", keys="my-secret-api-key-1 tok\n")
    assert gate.request("/api/tags", headers=basic("myuser", "mypassword")).status == 200
    assert gate.request("/api/tags", headers=bearer("my-secret-api-key-1")).status == 200
    for headers in [{}, basic("myuser", "x"), bearer("x"), basic("my-secret-api-key-1", ""), bearer("mypassword")]:
        refused = gate.request("/api/tags", headers=headers)
        assert refused.status == 401
        assert sorted(refused.header_all("WWW-Authenticate")) == ['Basic realm="ollama"', 'Bearer realm="ollama"']
        assert "error" in refused.json()


def test_satisfy_any_with_two_challenges_leaves_none_on_admitted_response(gate):
    start(gate, htpasswd_line("-m", "u", "p") + "\n", keys="k\n", location_extra="satisfy any; allow 127.0.0.1; deny all;")
    response = gate.request("/api/tags")
    assert response.status == 200
    assert response.header_all("WWW-Authenticate") == []


def test_satisfy_any_with_stock_auth_basic_alongside(gate):
    """Two access modules both deny: every challenge is offered; one admits: none is left."""
    gate.write("stock.htpasswd", htpasswd_line("-m", "stock", "s") + "\n")
    start(gate, htpasswd_line("-m", "u", "p") + "\n", keys="k\n",
          location_extra='satisfy any; auth_basic "stock"; auth_basic_user_file stock.htpasswd;')
    refused = gate.request("/api/tags")
    assert refused.status == 401
    assert sorted(refused.header_all("WWW-Authenticate")) == ['Basic realm="ollama"', 'Basic realm="stock"', 'Bearer realm="ollama"']
    for headers in [basic("stock", "s"), basic("u", "p"), bearer("k")]:
        admitted = gate.request("/api/tags", headers=headers)
        assert admitted.status == 200 and admitted.header_all("WWW-Authenticate") == [], headers


def test_user_file_inherits_and_off_like_the_keys_file(gate):
    gate.write("users.htpasswd", htpasswd_line("-m", "u", "p") + "\n")
    gate.configure(f"""
        ollama_basic_user_file users.htpasswd;
        location / {{ {PROXY} }}
        location /open/ {{ ollama_basic_user_file off; alias {{dir}}/html/; }}
    """)
    gate.start()
    assert gate.request("/api/tags").status == 401
    assert gate.request("/api/tags", headers=basic("u", "p")).status == 200
    assert gate.request("/open/index.html").status == 200


def test_nginx_t_fails_for_a_missing_user_file(gate):
    gate.configure(f"location / {{ ollama_basic_user_file missing.htpasswd; {PROXY} }}")
    rc, output = gate.test_config()
    assert rc != 0 and f'cannot load basic user file "{gate.dir}/missing.htpasswd": No such file' in output


def timed(gate, headers):
    start_time = time.monotonic()
    status = gate.request("/api/tags", headers=headers).status
    return status, time.monotonic() - start_time


def test_a_long_password_cannot_hold_a_worker(gate):
    """SHA-crypt hashes the password once per round: a 4,000-byte password against 100,000
    SHA-512 rounds once took seconds, reachable without credentials through the decoy."""
    costly = htpasswd_line("-5", "costly", "pw", "-r", "100000")
    start(gate, costly + "\n")
    long_password = "x" * 4000
    for user in ["costly", "nobody"]:
        status, seconds = timed(gate, basic(user, long_password))
        assert status == 401 and seconds < 0.2, (user, seconds)
    # A password at the cap is still checked (htpasswd refuses passwords this long; glibc's
    # crypt(3) through Python makes the hash).
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    at_cap = "y" * 256
    gate.write("users.htpasswd", "capped:" + crypt.crypt(at_cap, crypt.mksalt(crypt.METHOD_SHA512)) + "\n")
    wait_until(lambda: gate.request("/api/tags", headers=basic("capped", at_cap)).status == 200, 3)
    assert gate.request("/api/tags", headers=basic("capped", at_cap)).status == 200
    assert gate.request("/api/tags", headers=basic("capped", at_cap + "y")).status == 401


def test_an_unknown_user_costs_what_the_costliest_known_user_costs(gate):
    """The decoy was the file's first hash: with {PLAIN} first and bcrypt later, an unknown user
    cost a microsecond and a known one tens of milliseconds, which told who exists."""
    users = "cheap:{PLAIN}x\n" + htpasswd_line("-B", "slow", "right", "-C", "10") + "\n"
    start(gate, users)
    known = min(timed(gate, basic("slow", "guess"))[1] for _ in range(3))
    unknown = min(timed(gate, basic("nobody", "guess"))[1] for _ in range(3))
    assert known > 0.02, known  # cost-10 bcrypt: some 60 ms here
    assert unknown > known / 3, (known, unknown)
