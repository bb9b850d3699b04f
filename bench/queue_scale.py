"""The fair queue at scale (issue 22): 10,000 requests waiting across 1,000 keys in a gate with 2
workers, one slot held by a long request. Measures the workers' CPU while they all wait (target:
below 2% of one core), then the time the queue takes to hand the freed slots on, request after
request. Run from the checkout after `make build`: .venv/bin/python bench/queue_scale.py
(or /work/venv/bin/python); it uses the test suite's stand-in Ollama and nginx harness."""

import json
import os
import resource
import selectors
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Gate, module_path, nginx_binary, wait_until  # noqa: E402
from fake_ollama import FakeOllama  # noqa: E402

WAITING = 10_000
KEYS = 1_000
MEASURE_S = 10


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def gauge(gate, name):
    text = gate.request("/metrics").body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def open_request(port, key, extra=""):
    sock = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"model": "gemma3", "prompt": "x", "stream": False}).encode()
    sock.sendall((f"POST /api/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-{key}\r\n"
                  f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body)
    return sock


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    with FakeOllama() as ollama:
        gate = Gate(nginx_binary(), module_path(), ollama.port)
        try:
            gate.write("keys.txt", "".join(f"key-{i} k{i}\n" for i in range(KEYS)))
            gate.configure("""
                location / {
                    ollama_bearer_keys_file keys.txt;
                    ollama_auth_queue q capacity=1 max_waiting=20000 timeout=10m;
                    proxy_pass http://{upstream}; proxy_http_version 1.1; proxy_set_header Connection "";
                    proxy_read_timeout 10m;
                }
                location = /metrics { ollama_auth_metrics q; }
            """, http_extra="ollama_auth_zone q 16m;", workers=2,
                main_extra="worker_rlimit_nofile 40000;")
            conf = gate.path("nginx.conf").read_text().replace("worker_connections 512", "worker_connections 20000")
            gate.write("nginx.conf", conf)
            gate.start()
            holder = open_request(gate.port, 0, "X-Fake-Wait: 600\r\n")
            assert wait_until(lambda: gauge(gate, "ollama_auth_in_flight") == 1, 10)
            began = time.time()
            waiting = [open_request(gate.port, i % KEYS, "X-Fake-Wait: 0\r\n") for i in range(WAITING)]
            assert wait_until(lambda: gauge(gate, "ollama_auth_queue_waiting") == WAITING, 120, 0.5), \
                gauge(gate, "ollama_auth_queue_waiting")
            print(f"{WAITING} waiting across {KEYS} keys after {time.time() - began:.1f} s")
            workers = gate.worker_pids()
            time.sleep(1)
            before = {pid: cpu_ticks(pid) for pid in workers}
            time.sleep(MEASURE_S)
            tick = os.sysconf("SC_CLK_TCK")
            for pid in workers:
                share = (cpu_ticks(pid) - before[pid]) / tick / MEASURE_S
                print(f"worker {pid}: {100 * share:.2f}% of one core while {WAITING} wait")
            total = sum(cpu_ticks(pid) - before[pid] for pid in workers) / tick / MEASURE_S
            print(f"both workers: {100 * total:.2f}% of one core (target: below 2%)")
            # Hand the slot on: the holder goes, and the waiting requests run one at a time.
            holder.close()
            selector = selectors.DefaultSelector()
            for sock in waiting:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            started, answered = time.time(), 0
            while answered < 2_000:
                for key, _ in selector.select(timeout=10):
                    if key.fileobj.recv(65536):
                        answered += 1
                    selector.unregister(key.fileobj)
            spent = time.time() - started
            print(f"2,000 requests dispatched one after another from the queue in {spent:.2f} s: "
                  f"{1000 * spent / 2000:.2f} ms each, upstream round trip included")
            for sock in waiting:
                sock.close()
        finally:
            gate.cleanup()


if __name__ == "__main__":
    main()
