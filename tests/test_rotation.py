"""Rotation under load: while clients hammer the gate with a key that every version of the file
keeps, the file is replaced by atomic rename hundreds of times, appended to, and nginx is
reloaded. Not one answer for the kept key may be anything but 200; afterwards a key dropped
from the file is refused by every worker, and no worker crashed.

Bounded: about 15 seconds of load, then checks."""

import http.client
import os
import random
import threading
import time

from conftest import wait_until

KEPT = "kept-key-0123456789abcdef"
DROPPED = "dropped-key-fedcba9876543210"
FILLER = 5_000  # keys per version, so each re-read takes a moment


def keys_version(version, with_dropped=True):
    lines = [f"{KEPT} kept"]
    if with_dropped:
        lines.append(f"{DROPPED} dropped")
    lines += [f"filler-{version}-{i:06d}" for i in range(FILLER)]
    random.shuffle(lines)
    return "\n".join(lines) + "\n"


class Load:
    """Client threads on keep-alive connections; a closed connection (nginx reloads close idle
    keep-alive connections of old workers) is reopened and the request sent again."""

    def __init__(self, port, threads=4):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses = {}
        self.reconnects = 0
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        connection = None
        while not self.stop.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", "/index.html", headers={"Authorization": f"Bearer {KEPT}"})
                response = connection.getresponse()
                response.read()
                with self.lock:
                    self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (ConnectionError, http.client.HTTPException, OSError):
                with self.lock:
                    self.reconnects += 1
                if connection is not None:
                    connection.close()
                connection = None

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def test_rotation_under_load_never_refuses_the_kept_key(gate):
    gate.write("keys.txt", keys_version(0))
    gate.configure("location / { ollama_bearer_keys_file keys.txt; ollama_auth_default_scopes all; }", workers=2)
    gate.start()

    swaps = appends = reloads = 0
    deadline = time.monotonic() + 15
    with Load(gate.port) as load:
        while time.monotonic() < deadline:
            swaps += 1
            staged = gate.write("keys.txt.new", keys_version(swaps))
            os.rename(staged, gate.path("keys.txt"))
            if swaps % 10 == 0:
                with open(gate.path("keys.txt"), "a") as f:
                    f.write(f"appended-{swaps}\n")
                appends += 1
            if swaps % 60 == 0:
                gate.reload()
                reloads += 1
            time.sleep(0.02)
        # The last version drops a key.
        staged = gate.write("keys.txt.new", keys_version(swaps + 1, with_dropped=False))
        os.rename(staged, gate.path("keys.txt"))
        swaps += 1
        time.sleep(1.2)

    total = sum(load.statuses.values())
    print(f"\nrequests {total}, statuses {load.statuses}, reconnects {load.reconnects}, "
          f"swaps {swaps}, appends {appends}, reloads {reloads}")
    assert load.statuses.keys() == {200}, load.statuses
    assert total > 2_000, "the load generator hardly ran"
    assert swaps >= 200 and reloads >= 3

    # Every worker refuses the dropped key: many new connections spread over both workers.
    for _ in range(40):
        assert gate.request("/index.html", headers={"Authorization": f"Bearer {DROPPED}"}).status == 401
        assert gate.request("/index.html", headers={"Authorization": f"Bearer {KEPT}"}).status == 200
    log = gate.error_log()
    assert "exited on signal" not in log
    assert "[alert]" not in log and "[crit]" not in log
