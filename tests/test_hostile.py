"""Hostile input: odd, huge and malformed requests, and files that are garbage. Every case gets
a correct answer and, where a file is at fault, a clear log line: never a crash, a hang, or a
200 for a stranger. (Missing, unreadable, directory and FIFO files are in test_reload.py.)"""

import base64
import os

import pytest

from conftest import wait_until

GOOD = "good-key-0123456789"


def start(gate, keys=f"{GOOD} good\n", users=None, workers=1):
    gate.write("keys.txt", keys)
    directives = "ollama_bearer_keys_file keys.txt;"
    if users is not None:
        gate.write("users.htpasswd", users)
        directives += " ollama_basic_user_file users.htpasswd;"
    # Static files are no Ollama endpoint: `all` lets every key reach them, as before scopes.
    gate.configure(f"location / {{ {directives} ollama_auth_default_scopes all; }}", workers=workers)
    return gate.start()


def raw_status(gate, header_lines):
    request = b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"".join(h + b"\r\n" for h in header_lines) + b"\r\n"
    answer = gate.raw(request)
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12]), answer


@pytest.mark.parametrize("header,expected", [
    (b"Authorization: Bearer " + GOOD.encode(), 200),
    (b"authorization: bearer " + GOOD.encode(), 200),         # header names and scheme in any case
    (b"Authorization:    Bearer " + GOOD.encode() + b"   ", 200),  # surrounding white space is not part of the value
    # RFC 9110 and 6750: scheme 1*SP credential. A tab is refused, as nginx's auth_basic refuses it.
    (b"Authorization: Bearer\t" + GOOD.encode(), 401),
    (b"Authorization: Bearer \t" + GOOD.encode(), 401),
    (b"Authorization: Bearer " + GOOD.encode() + b"\xff", 401),
    (b"Authorization: Bearer \xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91", 401),
    (b"Authorization: Bearer " + b"x" * 7000, 401),
    (b"Authorization: Basic " + b"A" * 7000, 401),
    (b"Authorization: Bearer " + GOOD.encode() + b"\x01", 401),
    (b"Authorization: Bearer " + GOOD.encode() + b" " + GOOD.encode(), 401),
    (b"Authorization: " + b"Bearer " * 900, 401),
    (b"Authorization: " + b" " * 3000, 401),
    (b"Authorization:", 401),
    (b"Authorization: \x80\x81\x82", 401),
    (b"X-Authorization: Bearer " + GOOD.encode(), 401),
])
def test_odd_headers_get_the_right_answer(gate, header, expected):
    start(gate)
    status, answer = raw_status(gate, [header])
    assert status == expected, answer[:300]


@pytest.mark.parametrize("headers", [
    [b"Authorization: Bearer wrong", b"Authorization: Bearer " + GOOD.encode()],
    [b"Authorization: Bearer " + GOOD.encode(), b"Authorization: Bearer wrong"],
    [b"Authorization: Bearer " + GOOD.encode(), b"Authorization: Bearer " + GOOD.encode()],
])
def test_two_authorization_headers_never_admit(gate, headers):
    """nginx itself refuses a repeated Authorization header (400), before any access check."""
    start(gate)
    status, _ = raw_status(gate, headers)
    assert status == 400


@pytest.mark.parametrize("header", [
    b"Authorization: Bearer good\x00-key",
    b"Authorization: Bearer " + b"y" * 70_000,  # beyond large_client_header_buffers
])
def test_requests_nginx_refuses_itself_are_never_admitted(gate, header):
    start(gate)
    status, _ = raw_status(gate, [header])
    assert status in (400, 494)


def test_many_requests_of_garbage_leave_the_worker_healthy(gate):
    start(gate, users="u:{PLAIN}p\n")
    seed = 12345
    for i in range(400):
        seed = (seed * 1103515245 + 12345) % 2**31
        length = seed % 300
        junk = bytes((seed >> (j % 24)) % 256 for j in range(length)).replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
        scheme = [b"Bearer ", b"Basic ", b"bearer\t", b""][i % 4]
        status, _ = raw_status(gate, [b"Authorization: " + scheme + junk])
        assert status in (400, 401), (i, junk)
    status, _ = raw_status(gate, [b"Authorization: Bearer " + GOOD.encode()])
    assert status == 200
    assert "exited on signal" not in gate.error_log()


def test_binary_garbage_keys_file_loads_its_good_lines_only(gate):
    garbage = bytes((i * 7919 + 13) % 256 for i in range(50_000))
    start(gate, keys=garbage + f"\n{GOOD} good\n".encode())
    assert raw_status(gate, [b"Authorization: Bearer " + GOOD.encode()])[0] == 200
    assert raw_status(gate, [b"Authorization: Bearer " + garbage[:20].replace(b"\n", b"")])[0] in (400, 401)
    log = gate.error_log()
    assert "skipped: control character in line" in log
    assert "more lines skipped" in log or log.count("skipped") >= 1


def test_enormous_line_is_skipped_with_a_warning(gate):
    start(gate, keys="x" * 5_000_000 + f"\n{GOOD}\n")
    assert raw_status(gate, [b"Authorization: Bearer " + GOOD.encode()])[0] == 200
    assert f'"{gate.dir}/keys.txt" line 1 skipped: key longer than 4096 bytes' in gate.error_log()


def test_garbage_htpasswd_file(gate):
    garbage = bytes((i * 104729 + 7) % 256 for i in range(30_000))
    start(gate, users=garbage + b"\nuser:{PLAIN}pass\n" + b"y" * 2_000_000 + b":$apr1$x\n")
    basic = b"Authorization: Basic " + base64.b64encode(b"user:pass")
    assert raw_status(gate, [basic])[0] == 200
    assert raw_status(gate, [b"Authorization: Basic " + base64.b64encode(garbage[:30])])[0] == 401
    assert "basic user file" in gate.error_log() and "skipped" in gate.error_log()


def test_file_swapped_for_garbage_at_run_time_keeps_working(gate):
    start(gate)
    gate.write("keys.txt.new", bytes(range(256)) * 1000)
    os.rename(gate.path("keys.txt.new"), gate.path("keys.txt"))
    import time
    time.sleep(1.0)
    # The garbage has no valid key: the old one is gone, as the file says. No crash, no 200.
    assert raw_status(gate, [b"Authorization: Bearer " + GOOD.encode()])[0] == 401
    assert wait_until(lambda: "loaded: 0 keys" in gate.error_log(), 3)
    assert "exited on signal" not in gate.error_log()


def test_pipelined_401s_to_a_small_send_buffer_all_arrive(gate):
    """A 401 whose write meets EAGAIN is finished by nginx's flush (an output_filter call with
    no data); the body filter must pass that call on. It once answered NGX_OK instead: 20
    answers, then nothing until send_timeout and a reset."""
    gate.write("keys.txt", f"{GOOD}\n")
    gate.configure("""
        send_timeout 5s;
        keepalive_requests 10000;
        location / { ollama_bearer_keys_file keys.txt; }
    """)
    conf = gate.path("nginx.conf").read_text().replace(f"listen 127.0.0.1:{gate.port};",
                                                       f"listen 127.0.0.1:{gate.port} sndbuf=4k;")
    gate.write("nginx.conf", conf)
    gate.start()
    count = 3000
    requests = b"GET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n" * (count - 1) + \
        b"GET /api/tags HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    import socket
    import threading
    with socket.create_connection(("127.0.0.1", gate.port), timeout=20) as s:
        sender = threading.Thread(target=s.sendall, args=(requests,), daemon=True)
        sender.start()
        received = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
    answers = b"".join(received).count(b"HTTP/1.1 401 ")
    assert answers == count
