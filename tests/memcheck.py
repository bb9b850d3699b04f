"""`make memcheck`: the module under valgrind's memcheck, then worker memory over a million requests.

1. Debian's nginx (one process, master_process off) runs under memcheck with the module gating
   by Bearer and Basic. A mix of requests is sent: admitted and refused keys, Basic right, wrong
   and malformed, HEAD, a POST with a body, while the keys and user files are replaced by atomic
   rename (re-reads). Then nginx stops. Any invalid access, and any leaked block whose stack goes
   through the module, fails the check.
2. Natively, with one worker: a million admitted requests (wrk) and 200,000 refused ones, with the
   worker's resident memory sampled on the way; it must stay flat (within 2 MB after warm-up).

Prints figures and exits non-zero on failure. Takes a few minutes.
"""

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
MODULE = os.environ.get("OLLAMA_AUTH_MODULE", str(ROOT / "dist/debian/ngx_http_ollama_auth_module.so"))
PORT = 18997
KEY = "memcheck-key-0123456789abcdef"


def write(path, text, mode=0o644):
    path.write_text(text)
    os.chmod(path, mode)


def conf(work, single_process):
    return f"""
load_module {MODULE};
{'master_process off; daemon off;' if single_process else ''}
worker_processes 1;
error_log {work}/error.log notice;
pid {work}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    log_format who '$ollama_auth_user';
    server {{
        listen 127.0.0.1:{PORT};
        root {work}/html;
        location / {{
            ollama_bearer_keys_file keys.txt;
            ollama_basic_user_file users.htpasswd;
            # /f is a static file, no Ollama endpoint: every key may have it, as in `make bench`.
            ollama_auth_default_scopes all;
            access_log {work}/who.log who;
        }}
    }}
}}
"""


def prepare():
    work = Path(tempfile.mkdtemp(prefix="ollama-auth-memcheck-", dir="/tmp"))
    os.chmod(work, 0o755)
    (work / "html").mkdir()
    (work / "logs").mkdir()
    write(work / "html/f", "ok")
    write(work / "keys.txt", f"{KEY} named\nunnamed-key-1\n")
    users = subprocess.run(["htpasswd", "-nbB", "-C", "4", "alice", "wonderland"], capture_output=True, text=True, check=True).stdout
    write(work / "users.htpasswd", users + "bob:{PLAIN}builder\n")
    return work


def wait_port(timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("nginx did not start")


def request(method="GET", headers=(), body=b""):
    with socket.create_connection(("127.0.0.1", PORT), timeout=60) as s:
        lines = [f"{method} /f HTTP/1.1", "Host: x", "Connection: close", *headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data[9:12])


def basic(user, password):
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


MIX = [
    ((f"Authorization: Bearer {KEY}",), 200),
    (("Authorization: Bearer unnamed-key-1",), 200),
    (("Authorization: Bearer wrong",), 401),
    (("Authorization: Bearer two tokens",), 401),
    ((basic("alice", "wonderland"),), 200),
    ((basic("bob", "builder"),), 200),
    ((basic("alice", "nope"),), 401),
    ((basic("nobody", "x"),), 401),
    (("Authorization: Basic !!!",), 401),
    ((),  401),
]


def run_memcheck(work):
    log = work / "valgrind.log"
    process = subprocess.Popen(["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
                                "--num-callers=30", f"--log-file={log}", NGINX, "-p", str(work), "-c", str(work / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port()
        sent = 0
        for round_ in range(30):
            for headers, expected in MIX:
                status = request(headers=headers)
                assert status == expected, (headers, status)
                sent += 1
            assert request("HEAD") == 401
            assert request("POST", headers=(f"Authorization: Bearer {KEY}",), body=b"x" * 5000) in (200, 405)
            assert request("POST", body=b"y" * 5000) == 401
            sent += 3
            if round_ % 5 == 4:  # re-reads of both files, by atomic rename
                write(work / "keys.new", f"{KEY} named\nunnamed-key-1\nadded-{round_}\n")
                os.rename(work / "keys.new", work / "keys.txt")
                text = (work / "users.htpasswd").read_text()
                write(work / "users.new", text + f"u{round_}:{{PLAIN}}p\n")
                os.rename(work / "users.new", work / "users.htpasswd")
                time.sleep(0.5)
    except BaseException:
        process.kill()  # a failed check leaves no nginx on the port for the next run
        raise
    process.send_signal(signal.SIGQUIT)
    process.wait(timeout=300)
    report = log.read_text()
    errors = int(re.search(r"ERROR SUMMARY: (\d+) errors", report).group(1))
    # Leak records whose stacks pass through the module (nginx's own exit leaves pools in place).
    records = re.split(r"\n==\d+== \n", report)
    ours = [r for r in records if re.search(r"(definitely|indirectly|possibly) lost in loss record", r) and "ngx_ollama_auth" in r]
    invalid = [r for r in records if re.search(r"Invalid (read|write|free)|uninitialised|Mismatched", r)]
    print(f"memcheck: {sent} requests, {errors} errors in total, {len(invalid)} invalid accesses, "
          f"{len(ours)} leak records through the module")
    for record in (invalid + ours)[:5]:
        print(record[:3000])
    return not invalid and not ours


def resident_mb(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


def run_wrk(header, requests_wanted):
    """wrk runs by time: run 10-second slices until the count is reached."""
    done = 0
    while done < requests_wanted:
        out = subprocess.run(["wrk", "-t1", "-c16", "-d10s", "-H", header, f"http://127.0.0.1:{PORT}/f"],
                             capture_output=True, text=True, check=True).stdout
        done += int(re.search(r"(\d+) requests in", out).group(1))
    return done


def run_rss(work):
    (work / "nginx.conf").write_text(conf(work, single_process=False))
    subprocess.run([NGINX, "-p", str(work), "-c", str(work / "nginx.conf")], check=True)
    wait_port()
    master = int((work / "nginx.pid").read_text())
    worker = int(subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()[0])
    try:
        run_wrk(f"Authorization: Bearer {KEY}", 50_000)  # warm-up
        samples = [resident_mb(worker)]
        admitted = 0
        while admitted < 1_000_000:
            admitted += run_wrk(f"Authorization: Bearer {KEY}", 1)
            samples.append(resident_mb(worker))
        refused = run_wrk("Authorization: Bearer wrong-key", 200_000)
        samples.append(resident_mb(worker))
    finally:
        os.kill(master, signal.SIGTERM)
    growth = max(samples) - samples[0]
    print(f"worker RSS over {admitted:,} admitted and {refused:,} refused requests: "
          f"{', '.join(f'{s:.1f}' for s in samples)} MB; growth {growth:.2f} MB")
    return growth < 2.0


def main():
    work = prepare()
    (work / "nginx.conf").write_text(conf(work, single_process=True))
    ok = run_memcheck(work)
    ok = run_rss(work) and ok
    print("memcheck: OK" if ok else "memcheck: FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
