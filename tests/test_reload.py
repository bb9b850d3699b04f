"""Hot reload without an nginx reload, faults at run time, and configuration errors.

Every change must count on the first request that starts at least one second after it, in every
worker. The tests run two workers and send each check on a new connection, many times, so both
workers answer."""

import os
import stat
import subprocess
import time

import pytest

from test_bearer import PROXY, bearer

CHECKS_PER_LOOK = 12  # new connections per look, spread over the two workers


def start(gate, keys, name="keys.txt", workers=2, path=None):
    gate.write(name, keys)
    gate.configure(f"location / {{ ollama_bearer_keys_file {path or name}; {PROXY} }}", workers=workers)
    return gate.start()


def statuses(gate, key):
    return {gate.request("/api/tags", headers=bearer(key)).status for _ in range(CHECKS_PER_LOOK)}


def assert_after_one_second(gate, admitted=(), refused=()):
    time.sleep(1.0)
    for key in admitted:
        assert statuses(gate, key) == {200}, f"{key} should be admitted"
    for key in refused:
        assert statuses(gate, key) == {401}, f"{key} should be refused"


def test_edit_in_place_twice_within_one_second_same_size(gate):
    start(gate, "key-aaaa\n")
    path = gate.path("keys.txt")
    with open(path, "r+b") as f:  # same inode, same size
        f.write(b"key-bbbb\n")
    time.sleep(0.3)
    with open(path, "r+b") as f:
        f.write(b"key-cccc\n")
    assert_after_one_second(gate, admitted=["key-cccc"], refused=["key-aaaa", "key-bbbb"])


def test_same_size_rewrite_with_restored_mtime_is_still_seen(gate):
    """Same inode, same size, mtime put back (as `cp -p`, `rsync -t` or tar do): the ctime still
    changes, and it is part of what the watcher compares. (The racily-clean case, two writes in
    one timestamp tick, cannot be produced on demand; watch.rs unit-tests it.)"""
    start(gate, "key-aaaa\n")
    path = gate.path("keys.txt")
    for _ in range(3):
        before = os.stat(path)
        path.write_bytes(b"key-zzzz\n")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        path.write_bytes(b"key-aaaa\n")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    path.write_bytes(b"key-zzzz\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert_after_one_second(gate, admitted=["key-zzzz"], refused=["key-aaaa"])


def test_append(gate):
    start(gate, "key-one\n")
    with open(gate.path("keys.txt"), "a") as f:
        f.write("key-two\n")
    assert_after_one_second(gate, admitted=["key-one", "key-two"])


def test_atomic_rename(gate):
    start(gate, "key-old\n")
    gate.write("keys.txt.new", "key-new\n")
    os.rename(gate.path("keys.txt.new"), gate.path("keys.txt"))
    assert_after_one_second(gate, admitted=["key-new"], refused=["key-old"])


def test_kubernetes_style_symlink_swap(gate):
    """keys.txt -> ..data/keys.txt, ..data -> ..2026_v1; the update swaps ..data atomically."""
    gate.write("secret/..v1/keys.txt", "key-v1\n")
    gate.write("secret/..v2/keys.txt", "key-v2\n")
    os.symlink("..v1", gate.path("secret/..data"))
    os.symlink("..data/keys.txt", gate.path("secret/keys.txt"))
    gate.configure(f"location / {{ ollama_bearer_keys_file secret/keys.txt; {PROXY} }}", workers=2)
    gate.start()
    assert statuses(gate, "key-v1") == {200}
    os.symlink("..v2", gate.path("secret/..data_tmp"))
    os.rename(gate.path("secret/..data_tmp"), gate.path("secret/..data"))
    assert_after_one_second(gate, admitted=["key-v2"], refused=["key-v1"])


def test_deleted_file_keeps_last_good_set_logs_once_and_comes_back(gate):
    start(gate, "key-kept\n")
    os.unlink(gate.path("keys.txt"))
    for _ in range(5):
        assert_after_one_second(gate, admitted=["key-kept"])
    log = gate.error_log()
    message = f'bearer keys file "{gate.dir}/keys.txt" cannot be read, still using the last good version'
    # One line per worker for this change, not one per request.
    assert 1 <= log.count(message) <= 2, log
    assert "No such file or directory" in log
    gate.write("keys.txt", "key-back\n")
    assert_after_one_second(gate, admitted=["key-back"], refused=["key-kept"])


def test_file_replaced_by_a_directory_then_a_fifo(gate):
    start(gate, "key-kept\n")
    os.unlink(gate.path("keys.txt"))
    os.mkdir(gate.path("keys.txt"))
    assert_after_one_second(gate, admitted=["key-kept"])
    assert "not a regular file" in gate.error_log()
    os.rmdir(gate.path("keys.txt"))
    os.mkfifo(gate.path("keys.txt"))
    os.chmod(gate.path("keys.txt"), 0o644)
    start_time = time.monotonic()
    assert_after_one_second(gate, admitted=["key-kept"])
    assert time.monotonic() - start_time < 10, "a FIFO must never block a worker"


def test_file_turned_unreadable_at_run_time(gate):
    start(gate, "key-kept\n")
    os.chmod(gate.path("keys.txt"), 0o600)  # the workers run as nobody
    with open(gate.path("keys.txt"), "a") as f:
        f.write("key-new\n")
    assert_after_one_second(gate, admitted=["key-kept"], refused=["key-new"])
    assert "Permission denied" in gate.error_log()
    os.chmod(gate.path("keys.txt"), 0o644)
    assert_after_one_second(gate, admitted=["key-kept", "key-new"])


def test_worker_that_cannot_read_the_file_says_so_at_start(gate):
    gate.write("keys.txt", "key-root\n", mode=0o600)  # the master (root) can read it; nobody cannot
    gate.configure(f"location / {{ ollama_bearer_keys_file keys.txt; {PROXY} }}", workers=2)
    gate.start()
    from conftest import wait_until
    log = wait_until(lambda: gate.error_log().count("cannot be read by this worker process") >= 2 and gate.error_log(), 5)
    assert log, gate.error_log()
    assert "Permission denied" in log
    # What the master loaded keeps working.
    assert statuses(gate, "key-root") == {200}


def test_nginx_reload_picks_up_a_new_file_path(gate):
    start(gate, "key-one\n")
    gate.write("other.txt", "key-two\n")
    gate.configure(f"location / {{ ollama_bearer_keys_file other.txt; {PROXY} }}", workers=2)
    gate.reload()
    assert statuses(gate, "key-two") == {200}
    assert statuses(gate, "key-one") == {401}


@pytest.mark.parametrize("setup,expected", [
    (lambda g: None, "No such file or directory"),
    (lambda g: os.mkdir(g.path("keys.txt")), "not a regular file"),
])
def test_nginx_t_fails_naming_the_file_and_the_reason(gate, setup, expected):
    setup(gate)
    gate.configure(f"location / {{ ollama_bearer_keys_file keys.txt; {PROXY} }}")
    rc, output = gate.test_config()
    assert rc != 0
    assert "[emerg]" in output
    assert f'cannot load bearer keys file "{gate.dir}/keys.txt"' in output
    assert expected in output
    assert "nginx.conf:" in output  # and where in the configuration


def test_nginx_t_on_a_fifo_does_not_hang(gate):
    os.mkfifo(gate.path("keys.txt"))
    gate.configure(f"location / {{ ollama_bearer_keys_file keys.txt; {PROXY} }}")
    rc, output = gate.test_config()
    assert rc != 0 and "not a regular file" in output


@pytest.mark.parametrize("body,expected", [
    ("ollama_bearer_keys_file keys.txt; ollama_bearer_keys_file keys.txt;", "is duplicate"),
    ("ollama_bearer_keys_file;", "invalid number of arguments"),
    ("ollama_bearer_keys_file a b;", "invalid number of arguments"),
    ('ollama_bearer_keys_file "";', "needs a file path"),
    ("ollama_auth_realm a; ollama_auth_realm b;", "is duplicate"),
])
def test_nginx_t_rejects_bad_directives(gate, body, expected):
    gate.write("keys.txt", "k\n")
    gate.configure(f"location / {{ {body} {PROXY} }}")
    rc, output = gate.test_config()
    assert rc != 0 and expected in output, output


def test_nginx_t_warns_about_skipped_lines_and_passes(gate):
    gate.write("keys.txt", "ok-key\nsecret-sauce\x02line\n")
    gate.configure(f"location / {{ ollama_bearer_keys_file keys.txt; {PROXY} }}")
    rc, output = gate.test_config()
    assert rc == 0, output
    assert "line 2 skipped: control character" in output and "secret-sauce" not in output
