"""Benchmarks: the gate against no auth, the OpenResty-style Lua block and stock auth_basic.

Every variant runs in the same nginx binary (Debian's /usr/sbin/nginx) with one worker, in front
of a 2-byte static file. Two measures for each:

- instructions per request in the worker, counted by callgrind over a fixed number of keep-alive
  requests (user space only; repeatable to well under 1% on a busy machine). The targets are
  judged on the ratio of these counts (no auth / variant);
- requests per second and p99 latency from wrk (one thread, 32 connections), with nginx and wrk
  pinned to different cores. Wall-clock figures on a shared machine vary by up to 30%.

Then the scale figures at 1,000,000 keys: `nginx -t` time, a worker's resident memory when
serving and at its peak during a re-read, and the latency of the first request after a change.

Policy rows: keys with options on the static file, and `POST /api/chat` with a 1 KB body proxied to
a stand-in (a second server in the same nginx) by an unrestricted key and by a key limited to some
models (its body is read and scanned). With `--baseline SO` (a module built for the same nginx from
an earlier commit), the module's rows on each path (`AGAINST_BASELINE`) are counted with it too, in
the same run, so a change's cost is a ratio measured side by side. Last, the policy's own costs without nginx: a 20 MB
body's model check and a 200-model listing cut down (the unit-test binary, timed).

Usage: bench.py [--duration SECONDS] [--quick] [--baseline SO]; writes bench/results/.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench/work"
RESULTS = ROOT / "bench/results"
NGINX = "/usr/sbin/nginx"
MODULE = ROOT / "dist/debian/ngx_http_ollama_auth_module.so"
LUA_MODULES = ["/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so"]
PORT = 18999
UPSTREAM_PORT = PORT + 1
KEY = "bench-key-%032d"
KEY_COUNTS = [2, 1_000, 100_000, 1_000_000]
USER, PASSWORD = "benchuser", "bench-password"

# The guide's Lua logic, in our words: re-read the file on every request, trim each line, skip
# empty ones, and match "Bearer%s+(.+)" against the set of keys.
LUA_BLOCK = """
        access_by_lua_block {
            local keys = {}
            local file = io.open("%(path)s", "r")
            if file then
                for line in file:lines() do
                    local key = line:match("^%%s*(.-)%%s*$")
                    if key ~= "" then keys[key] = true end
                end
                file:close()
            end
            local header = ngx.var.http_authorization or ""
            local token = header:match("Bearer%%s+(.+)")
            if not token or not keys[token] then
                return ngx.exit(ngx.HTTP_UNAUTHORIZED)
            end
        }
"""


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


def prepare_files():
    WORK.mkdir(parents=True, exist_ok=True)
    os.chmod(WORK, 0o755)
    (WORK / "html").mkdir(exist_ok=True)
    (WORK / "html/f").write_text("ok")
    # A static stand-in for Ollama's GET /api/version, so a key with scopes=read is judged by
    # the endpoint table on a request that costs what the static file does.
    (WORK / "html/api").mkdir(exist_ok=True)
    (WORK / "html/api/version").write_text("ok")
    for count in KEY_COUNTS:
        path = WORK / f"keys-{count}.txt"
        if not path.exists():
            with open(path, "w") as f:
                for i in range(count):
                    f.write(KEY % i + "\n")
        os.utime(path, (time.time() - 60, time.time() - 60))  # not "racily clean" at start
    (WORK / "keys-scoped.txt").write_text("".join(f"{KEY % i} user-{i} scopes=all\n" for i in range(2)))
    (WORK / "keys-read.txt").write_text("".join(f"{KEY % i} user-{i} scopes=read\n" for i in range(2)))
    (WORK / "keys-models.txt").write_text("".join(f"{KEY % i} user-{i} models=gemma3,qwen* scopes=all\n" for i in range(2)))
    (WORK / "keys-limited.txt").write_text(
        "".join(f"{KEY % i} user-{i} scopes=all requests=1000000000/1d parallel=64\n" for i in range(2)))
    limited = WORK / f"keys-limited-{LIMITED_KEYS}.txt"
    if not limited.exists():
        limited.write_text("".join(f"{KEY % i} scopes=all requests=1000/1d parallel=4\n" for i in range(LIMITED_KEYS)))
    (WORK / "fleet/api").mkdir(parents=True, exist_ok=True)
    (WORK / "fleet/api/tags").write_text(FLEET_TAGS)
    (WORK / "generate.json").write_text(json.dumps({"model": "gemma3", "prompt": "Why is the sky blue?"}))
    chat = {"model": "gemma3", "stream": False, "messages": [{"role": "user", "content": ""}]}
    chat["messages"][0]["content"] = "x" * (1024 - len(json.dumps(chat)))
    (WORK / "chat-1k.json").write_text(json.dumps(chat))
    # The same 1 KB chat with options and keep_alive, for the caps rows (issue 19): within the
    # caps below, or with a num_ctx over them.
    options = dict(chat, options={"num_ctx": 4096, "num_predict": 100}, keep_alive="10m")
    options["messages"] = [{"role": "user", "content": ""}]
    options["messages"][0]["content"] = "x" * (1024 - len(json.dumps(options)))
    (WORK / "chat-1k-options.json").write_text(json.dumps(options))
    (WORK / "chat-1k-over.json").write_text(json.dumps(options).replace('"num_ctx": 4096', '"num_ctx": 65536'))
    (WORK / "apr1.htpasswd").write_text(sh("htpasswd", "-nbm", USER, PASSWORD).stdout)
    (WORK / "bcrypt.htpasswd").write_text(sh("htpasswd", "-nbB", "-C", "5", USER, PASSWORD).stdout)
    for path in WORK.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def bearer_header(count):
    return f"Authorization: Bearer {KEY % (count - 1)}"


def basic_header():
    import base64
    return "Authorization: Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def variant(name, location, header, keys=0, module=MODULE, path="/f", body=None, http=""):
    return {"name": name, "location": location, "header": header, "keys": keys, "module": module, "path": path,
            "body": body, "http": http}


# Static files are no Ollama endpoint: module rows on /f give every key `all`, as before scopes.
ALL = "ollama_auth_default_scopes all;"
PROXY = f"proxy_pass http://stand_in; proxy_http_version 1.1; proxy_set_header Connection \"\";"
# Usage counted in a zone (issue 11); limits are counted in the same zone (issue 12).
ZONE = "ollama_auth_zone bench 16m;"
USAGE = "ollama_auth_usage bench;"
# A streamed answer of 500 NDJSON chunks from the Python stand-in (tests/fake_ollama.py), relayed
# unbuffered: nginx sees each chunk as it comes.
STREAM_PORT = PORT + 2
STREAM = (f"proxy_pass http://127.0.0.1:{STREAM_PORT}; proxy_buffering off; proxy_http_version 1.1; "
          f"proxy_set_header X-Fake-Words 500; proxy_set_header X-Fake-Delay 0.0005;")
LIMITED_KEYS = 100_000
CAPS = "ollama_auth_caps num_ctx=8192 num_predict=4096 keep_alive=5m..30m;"
# A fleet of three members (issue 21), each a server of the same nginx answering /api/tags with
# 200 models (gemma3 among them), /api/ps with none, and the chat as the stand-in does; each
# reached through an upstream of its name= with keepalive, as the fixed proxy_pass is.
FLEET_PORTS = [PORT + 10, PORT + 11, PORT + 12]
FLEET_TAGS = json.dumps({"models": [{"name": f"model-{i}:latest", "model": f"model-{i}:latest"} for i in range(199)]
                        + [{"name": "gemma3:latest", "model": "gemma3:latest"}]})


def fleet_http():
    """The fleet and its three members (their /api/tags a file: too long for a `return`)."""
    members = "".join(f" server 127.0.0.1:{p} name=m{p};" for p in FLEET_PORTS)
    servers = "".join(f" upstream m{p} {{ server 127.0.0.1:{p}; keepalive 16; }}"
                      f" server {{ listen 127.0.0.1:{p}; location = /api/tags {{ root {WORK}/fleet; }}"
                      f" location = /api/ps {{ return 200 '{{\"models\":[]}}'; }}"
                      f" location / {{ return 200 '{{\"model\":\"gemma3\",\"done\":true}}'; }} }}"
                      for p in FLEET_PORTS)
    return f"ollama_auth_fleet bench {{{members} }}{servers}"


FLEET = ("ollama_auth_use_fleet bench; proxy_pass http://$ollama_fleet_backend; proxy_http_version 1.1; "
         "proxy_set_header Connection \"\";")
# The fair queue (issue 22) with a slot always free: what queueing costs a request that never waits.
QUEUE = "ollama_auth_queue bench capacity=64;"


# With --baseline: the module's rows counted again with the earlier module, in the same run, so a
# change's cost on each path (authentication, policy, body, caps, fleet, queue, zone, stream) is a
# ratio measured side by side.
BASELINE_PREFIX = "baseline "
AGAINST_BASELINE = [
    "module Bearer, 2 keys",
    "module Bearer, 2 keys with scopes=read, GET /api/version (static)",
    "module Basic, bcrypt cost 5, cached",
    "chat 1 KB proxied, unrestricted key",
    "chat 1 KB proxied, key with models=",
    "chat 1 KB with options proxied, caps that change nothing",
    "chat 1 KB proxied by model, fleet of 3 (200 models each)",
    "chat 1 KB proxied, unrestricted key, queued with a free slot",
    "module Bearer, 2 keys, usage counted",
    "module Bearer, key with requests= and parallel=",
    "stream 500 chunks, usage counted",
]


def variants(quick, baseline):
    counts = KEY_COUNTS[:2] if quick else KEY_COUNTS
    out = [variant("no auth", "", bearer_header(2))]
    for count in counts:
        out.append(variant(f"Lua block, {count:,} keys", LUA_BLOCK % {"path": WORK / f"keys-{count}.txt"},
                           bearer_header(count), count))
    out.append(variant("auth_basic, apr1", f'auth_basic "b"; auth_basic_user_file {WORK}/apr1.htpasswd;', basic_header()))
    out.append(variant("auth_basic, bcrypt cost 5", f'auth_basic "b"; auth_basic_user_file {WORK}/bcrypt.htpasswd;',
                       basic_header()))
    for count in counts:
        out.append(variant(f"module Bearer, {count:,} keys", f"ollama_bearer_keys_file {WORK}/keys-{count}.txt; {ALL}",
                           bearer_header(count), count))
    out.append(variant("module Bearer, 2 keys with scopes=all", f"ollama_bearer_keys_file {WORK}/keys-scoped.txt;",
                       bearer_header(2), 2))
    out.append(variant("no auth, GET /api/version (static)", "", bearer_header(2), path="/api/version"))
    out.append(variant("module Bearer, 2 keys with scopes=read, GET /api/version (static)",
                       f"ollama_bearer_keys_file {WORK}/keys-read.txt;", bearer_header(2), 2, path="/api/version"))
    out.append(variant("module Basic, bcrypt cost 5, cached", f"ollama_basic_user_file {WORK}/bcrypt.htpasswd; {ALL}",
                       basic_header()))
    out.append(variant("module Bearer+Basic, 2 keys, Bearer",
                       f"ollama_bearer_keys_file {WORK}/keys-2.txt; ollama_basic_user_file {WORK}/bcrypt.htpasswd; {ALL}",
                       bearer_header(2), 2))
    chat = WORK / "chat-1k.json"
    out.append(variant("chat 1 KB proxied, no auth", PROXY, bearer_header(2), path="/api/chat", body=chat))
    out.append(variant("chat 1 KB proxied, unrestricted key", f"ollama_bearer_keys_file {WORK}/keys-scoped.txt; {PROXY}",
                       bearer_header(2), 2, path="/api/chat", body=chat))
    out.append(variant("chat 1 KB proxied by model, fleet of 3 (200 models each)",
                       f"ollama_bearer_keys_file {WORK}/keys-scoped.txt; {FLEET}", bearer_header(2), 2, path="/api/chat",
                       body=chat, http=fleet_http()))
    out.append(variant("chat 1 KB proxied, unrestricted key, queued with a free slot",
                       f"ollama_bearer_keys_file {WORK}/keys-scoped.txt; {QUEUE} {PROXY}", bearer_header(2), 2,
                       path="/api/chat", body=chat, http=ZONE))
    out.append(variant("chat 1 KB proxied, key with models=", f"ollama_bearer_keys_file {WORK}/keys-models.txt; {PROXY}",
                       bearer_header(2), 2, path="/api/chat", body=chat))
    options, over = WORK / "chat-1k-options.json", WORK / "chat-1k-over.json"
    scoped = f"ollama_bearer_keys_file {WORK}/keys-scoped.txt;"
    out.append(variant("chat 1 KB with options proxied, no caps", f"{scoped} {PROXY}",
                       bearer_header(2), 2, path="/api/chat", body=options))
    out.append(variant("chat 1 KB with options proxied, caps that change nothing", f"{scoped} {CAPS} {PROXY}",
                       bearer_header(2), 2, path="/api/chat", body=options))
    out.append(variant("chat 1 KB with options proxied, caps that rewrite num_ctx", f"{scoped} {CAPS} {PROXY}",
                       bearer_header(2), 2, path="/api/chat", body=over))
    out.append(variant("module Bearer, 2 keys, usage counted", f"ollama_bearer_keys_file {WORK}/keys-2.txt; {ALL} {USAGE}",
                       bearer_header(2), 2, http=ZONE))
    out.append(variant("module Bearer, key with requests= and parallel=",
                       f"ollama_bearer_keys_file {WORK}/keys-limited.txt; {USAGE}", bearer_header(2), 2, http=ZONE))
    generate = WORK / "generate.json"
    out.append(variant("stream 500 chunks, usage not counted", f"ollama_bearer_keys_file {WORK}/keys-scoped.txt; {STREAM}",
                       bearer_header(2), 2, path="/api/generate", body=generate))
    out.append(variant("stream 500 chunks, usage counted",
                       f"ollama_bearer_keys_file {WORK}/keys-scoped.txt; {USAGE} {STREAM}", bearer_header(2), 2,
                       path="/api/generate", body=generate, http=ZONE))
    if baseline:
        out += [{**v, "name": BASELINE_PREFIX + v["name"], "module": baseline}
                for v in out if v["name"] in AGAINST_BASELINE]
    return out


def conf(location, daemon=True, extra_http="", module=MODULE):
    loads = "".join(f"load_module {m};\n" for m in [*LUA_MODULES, module])
    return f"""{loads}
worker_processes 1;
{'' if daemon else 'master_process off; daemon off;'}
error_log {WORK}/error.log warn;
pid {WORK}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {extra_http}
    upstream stand_in {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{UPSTREAM_PORT};
        location / {{ return 200 '{{"model":"gemma3","done":true}}'; }}
    }}
    server {{
        listen 127.0.0.1:{PORT};
        root {WORK}/html;
        location / {{
            {location}
        }}
    }}
}}
"""


def write_conf(location, **kwargs):
    path = WORK / "nginx.conf"
    path.write_text(conf(location, **kwargs))
    return path


def wait_port():
    import socket
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("nginx did not start")


def start_nginx(location, module=MODULE, http=""):
    path = write_conf(location, module=module, extra_http=http)
    sh("taskset", "-c", "0", NGINX, "-p", str(WORK), "-c", str(path))
    wait_port()
    master = int((WORK / "nginx.pid").read_text())
    # The master listens before it forks the worker (after loading the files): wait for it.
    for _ in range(600):
        found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        if found:
            return master, int(found[0])
        time.sleep(0.05)
    raise TimeoutError("no worker process")


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stop_nginx(master):
    """Stops nginx and makes sure no worker is left: a worker inside a slow request (the Lua block
    at 1,000,000 keys takes seconds) does not stop on SIGTERM until that request is done, and
    would burn the CPU the next variant is measured on."""
    workers = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    os.kill(master, signal.SIGTERM)
    for _ in range(40):
        if not alive(master):
            break
        time.sleep(0.05)
    for pid in [master, *map(int, workers)]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not any(alive(p) for p in [master, *map(int, workers)]):
            break
        time.sleep(0.05)


def check_status(header, path="/f", body=None):
    data = ["--data-binary", f"@{body}", "-H", "Content-Type: application/json"] if body else []
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", header, *data,
                          f"http://127.0.0.1:{PORT}{path}"], capture_output=True, text=True, timeout=120).stdout
    return out


def run_wrk_once(header, duration, path="/f"):
    out = sh("taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{duration}s", "--timeout", "30s", "--latency",
             "-H", header, f"http://127.0.0.1:{PORT}{path}").stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)] if p99 else None
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, p99_ms, int(non2xx.group(1)) if non2xx else 0


def run_wrk(header, duration, runs=3, path="/f"):
    """The best of a few runs: other tenants of a shared machine only ever slow a run down."""
    return max((run_wrk_once(header, duration, path) for _ in range(runs)), key=lambda result: result[0])


def callgrind_per_request(location, header, requests, module=MODULE, url_path="/f", body=None, http=""):
    """Worker instructions per request: callgrind with instrumentation switched on after a
    warm-up, over `requests` keep-alive requests, then dumped."""
    path = write_conf(location, daemon=False, module=module, extra_http=http)
    post = ["-p", str(body), "-T", "application/json"] if body else []
    out = WORK / "callgrind.out"
    for stale in WORK.glob("callgrind.out*"):
        stale.unlink()
    process = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--instr-atstart=no",
                                NGINX, "-p", str(WORK), "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port()
        warm = max(2, min(50, requests // 10))
        sh("ab", "-q", "-k", "-s", "900", "-n", str(warm), "-H", header, *post, f"http://127.0.0.1:{PORT}{url_path}")
        sh("callgrind_control", "-i", "on", str(process.pid))
        result = sh("ab", "-k", "-s", "900", "-n", str(requests), "-H", header, *post,
                    f"http://127.0.0.1:{PORT}{url_path}").stdout
        sh("callgrind_control", "-d", str(process.pid))
        time.sleep(0.3)
        failed = re.search(r"Non-2xx responses:\s+(\d+)", result)
        assert not failed, f"non-2xx answers while counting: {failed.group(0)}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    dump = next(p for p in sorted(WORK.glob("callgrind.out.*")))
    total = int(re.search(r"^summary: (\d+)", dump.read_text(), re.M).group(1))
    return total / requests


def instruction_budget(name, keys):
    """Requests counted under callgrind: fewer where one request costs millions of instructions."""
    name = name.removeprefix(BASELINE_PREFIX)
    if name.startswith("Lua block"):
        # At 1,000,000 keys one request is ~14 G instructions: minutes under callgrind. Not counted.
        return {2: 500, 1_000: 40, 100_000: 3, 1_000_000: 0}[keys]
    if "bcrypt" in name and name.startswith("auth_basic"):
        return 20
    if name.startswith("stream"):
        return 20  # each answer takes a quarter of a second
    return 2000


def proc_status(pid, field):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def scale_figures():
    """nginx -t time, worker memory and first-request latency after a change, at 1,000,000 keys."""
    keys = WORK / "keys-1000000.txt"
    location = f"ollama_bearer_keys_file {keys}; {ALL}"
    path = write_conf(location)
    times = []
    for _ in range(3):
        start = time.monotonic()
        sh(NGINX, "-t", "-q", "-p", str(WORK), "-c", str(path))
        times.append(time.monotonic() - start)
    master, worker = start_nginx(location)
    try:
        header = bearer_header(1_000_000)
        run_wrk(header, 2, runs=1)
        rss_serving = proc_status(worker, "VmRSS")
        time.sleep(0.5)
        # A change: the file replaced by atomic rename with one more key.
        staged = WORK / "keys-1000000.new"
        shutil.copyfile(keys, staged)
        with open(staged, "a") as f:
            f.write("bench-added-key\n")
        os.chmod(staged, 0o644)
        os.rename(staged, keys)
        start = time.monotonic()
        status = check_status("Authorization: Bearer bench-added-key")
        first_after_change = time.monotonic() - start
        peak = proc_status(worker, "VmHWM")
        rss_after = proc_status(worker, "VmRSS")
    finally:
        stop_nginx(master)
        # Back to the benchmark's file, aged so it is not racily clean.
        lines = keys.read_text().splitlines()[:-1]
        keys.write_text("\n".join(lines) + "\n")
        os.utime(keys, (time.time() - 60, time.time() - 60))
    return {
        "nginx_t_seconds": statistics.median(times),
        "worker_rss_serving_mb": rss_serving,
        "worker_peak_during_reread_mb": peak,
        "worker_rss_after_reread_mb": rss_after,
        "first_request_after_change_seconds": first_after_change,
        "first_request_after_change_status": status,
    }


def start_stream_stand_in():
    import sys
    import threading
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_ollama import FakeOllama
    stand_in = FakeOllama(port=STREAM_PORT)
    threading.Thread(target=stand_in.server.serve_forever, daemon=True).start()
    return stand_in.server


def limits_scale(duration):
    """100,000 keys with limits in one zone of the size the README gives them (about 1.1 KB a key
    for its counters and 0.4 KB for its metrics series, and 2 MB over): every key makes a
    request (wrk cycling through them), and none may find the zone full (a 503, and a line in
    the error log)."""
    zone_mb = (LIMITED_KEYS * (1152 + 384) >> 20) + 2
    location = f"ollama_bearer_keys_file {WORK}/keys-limited-{LIMITED_KEYS}.txt; {USAGE}"
    http = f"ollama_auth_zone bench {zone_mb}m;"
    script = WORK / "cycle-keys.lua"
    script.write_text(f"""
counter = 0
request = function()
    counter = counter + 1
    local key = string.format("bench-key-%032d", counter % {LIMITED_KEYS})
    return wrk.format(nil, nil, {{["Authorization"] = "Bearer " .. key}})
end
""")
    (WORK / "error.log").write_text("")
    master, worker = start_nginx(location, http=http)
    try:
        requests = 0
        while requests < 2 * LIMITED_KEYS:
            out = sh("taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{max(duration, 5)}s", "-s", str(script),
                     f"http://127.0.0.1:{PORT}/f").stdout
            requests += int(re.search(r"(\d+) requests in", out).group(1))
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            assert not non2xx, f"limited keys refused: {non2xx.group(0)}"
        full = "no room" in (WORK / "error.log").read_text()
    finally:
        stop_nginx(master)
    return {"limited_keys": LIMITED_KEYS, "limited_zone_mb": zone_mb, "limited_requests": requests,
            "limited_zone_full": full}


def policy_micro_costs():
    """The policy's own costs, without nginx: the release unit-test binary's timed measurements."""
    out = subprocess.run(["cargo", "test", "--release", "--lib", "-p", "ngx-ollama-auth", "--", "--ignored",
                          "--nocapture", "--test-threads=1", "measure_"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return {name: float(value) for name, value in re.findall(r"MEASURE (\S+) ([\d.]+)", out)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run; each variant gets the best of three")
    parser.add_argument("--quick", action="store_true", help="2 and 1,000 keys only, no scale figures")
    parser.add_argument("--baseline", type=Path, help="a module from an earlier commit, for the same nginx")
    args = parser.parse_args()
    prepare_files()

    rows = []
    stand_in = start_stream_stand_in()
    for v in variants(args.quick, args.baseline):
        name, header = v["name"], v["header"]
        master, worker = start_nginx(v["location"], v["module"], v["http"])
        try:
            status = check_status(header, v["path"], v["body"])
            assert status == "200", f"{name}: answered {status}"
            # wrk sends GETs: the POST rows are counted by callgrind only.
            rate, p99, non2xx = run_wrk(header, args.duration, path=v["path"]) if v["body"] is None else (None, None, 0)
        finally:
            stop_nginx(master)
        budget = instruction_budget(name, v["keys"])
        instructions = callgrind_per_request(v["location"], header, budget, v["module"], v["path"], v["body"],
                                             v["http"]) if budget else None
        rows.append({"variant": name, "keys": v["keys"], "rps": rate, "p99_ms": p99, "non2xx": non2xx,
                     "instructions": instructions})
        print(f"{name:48s} {rate or float('nan'):12.1f} req/s  p99 {p99 if p99 is not None else float('nan'):9.2f} ms  "
              f"{instructions or float('nan'):14.0f} instr/req", flush=True)

    ceiling = rows[0]
    for row in rows:
        row["rps_ratio"] = row["rps"] / ceiling["rps"] if row["rps"] is not None else None
        row["instruction_ratio"] = ceiling["instructions"] / row["instructions"] if row["instructions"] else None
    stand_in.shutdown()
    scale = None if args.quick else {**scale_figures(), **limits_scale(args.duration)}
    micro = policy_micro_costs()
    report(rows, scale, micro, args)


def machine():
    cpu = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1)
    nginx_version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; {nginx_version} (Debian), one worker"


def ratio_line(rows, name, reference, target, what):
    by_name = {r["variant"]: r for r in rows}
    if name not in by_name or reference not in by_name:
        return []
    ratio = by_name[reference]["instructions"] / by_name[name]["instructions"]
    return [f"- {what}: {by_name[name]['instructions']:,.0f} against {by_name[reference]['instructions']:,.0f} "
            f"instructions/request = {ratio:.4f} ({target})"]


def report(rows, scale, micro, args):
    RESULTS.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat()
    lua = {r["keys"]: r for r in rows if r["variant"].startswith("Lua")}
    lines = [
        f"Measured {date} on {machine()}; `make bench` (wrk -t1 -c32, best of three {args.duration}-second runs; callgrind over fixed keep-alive request counts).",
        "",
        "| variant | req/s | ratio to no auth (req/s) | p99 (ms) | instructions/request | ratio to no auth (instructions) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p99 = f"{r['p99_ms']:.2f}" if r["p99_ms"] is not None else "n/a"
        rate = "n/a (POST)" if r["rps"] is None else f"{r['rps']:,.0f}" if r["rps"] >= 10 else f"{r['rps']:.2f}"
        rps_ratio = f"{r['rps_ratio']:.4f}" if r["rps_ratio"] is not None else "n/a"
        counted = f"{r['instructions']:,.0f}" if r["instructions"] else "not counted (too slow for callgrind)"
        ratio = f"{r['instruction_ratio']:.4f}" if r["instruction_ratio"] else "n/a"
        lines.append(f"| {r['variant']} | {rate} | {rps_ratio} | {p99} | {counted} | {ratio} |")
    lines.append("")
    for name in AGAINST_BASELINE:
        lines += ratio_line(rows, name, BASELINE_PREFIX + name, "against the baseline module, same run",
                            f"{name}, this build")
    lines += ratio_line(rows, "module Bearer, 2 keys with scopes=all", "module Bearer, 2 keys",
                        "what options and the policy add to a plain key in this build", "a key with scopes=all")
    lines += ratio_line(rows, "module Bearer, 2 keys with scopes=read, GET /api/version (static)",
                        "no auth, GET /api/version (static)", "the endpoint table at work; against no auth on the same path",
                        "a key with scopes=read")
    lines += ratio_line(rows, "chat 1 KB proxied, key with models=", "chat 1 KB proxied, unrestricted key",
                        "target: at least 0.95", "POST /api/chat, 1 KB body, key with models= against an unrestricted key")
    lines += ratio_line(rows, "chat 1 KB with options proxied, caps that change nothing",
                        "chat 1 KB with options proxied, no caps", "target: at least 0.90",
                        "POST /api/chat, 1 KB body, caps that change nothing, against no caps")
    lines += ratio_line(rows, "chat 1 KB with options proxied, caps that rewrite num_ctx",
                        "chat 1 KB with options proxied, no caps", "the cost of a rewrite",
                        "POST /api/chat, 1 KB body, num_ctx clamped, against no caps")
    lines += ratio_line(rows, "chat 1 KB proxied by model, fleet of 3 (200 models each)", "chat 1 KB proxied, unrestricted key",
                        "target: at least 0.85", "routing a 1 KB chat by its model in a fleet, against a fixed proxy_pass")
    lines += ratio_line(rows, "chat 1 KB proxied, unrestricted key, queued with a free slot",
                        "chat 1 KB proxied, unrestricted key", "target: at least 0.97",
                        "POST /api/chat, 1 KB body, through the fair queue with a free slot, against no queue")
    lines += ratio_line(rows, "module Bearer, 2 keys, usage counted", "no auth", "target: at least 0.95",
                        "Bearer with usage counted in a zone, static file, against no auth")
    lines += ratio_line(rows, "stream 500 chunks, usage counted", "stream 500 chunks, usage not counted",
                        "target: at least 1/1.05 = 0.952", "a 500-chunk NDJSON stream relayed with usage counted, against not counted")
    lines += ratio_line(rows, "module Bearer, key with requests= and parallel=", "no auth", "target: at least 0.93",
                        "a key with requests= and parallel= (and usage counted), static file, against no auth")
    for name, value in sorted(micro.items()):
        lines.append(f"- {name.replace('_', ' ')}: {value:.3f} ms")
    for r in rows:
        if r["variant"] == f"module Bearer, {r['keys']:,} keys" and r["keys"] in lua:
            other = lua[r["keys"]]
            fewer = f"{other['instructions'] / r['instructions']:,.0f}x fewer instructions and " if other["instructions"] else ""
            faster = f"{r['rps'] / other['rps']:,.0f}x the req/s of the Lua block" if other["rps"] else \
                "the Lua block completed no request in the measured time"
            lines.append(f"- Bearer at {r['keys']:,} keys: {r['instruction_ratio']:.3f} of the ceiling; {fewer}{faster}.")
    if scale:
        lines += [
            "",
            "At 1,000,000 keys:",
            f"- `nginx -t`: {scale['nginx_t_seconds']:.2f} s",
            f"- worker resident memory when serving: {scale['worker_rss_serving_mb']:.0f} MB; "
            f"peak during a re-read (VmHWM): {scale['worker_peak_during_reread_mb']:.0f} MB; "
            f"after it: {scale['worker_rss_after_reread_mb']:.0f} MB",
            f"- first request after the file changed (it waits for the re-read): "
            f"{scale['first_request_after_change_seconds'] * 1000:.0f} ms (answered {scale['first_request_after_change_status']} "
            f"for the key just added)",
            f"- {scale['limited_keys']:,} keys with limits in one {scale['limited_zone_mb']} MB zone: "
            f"{scale['limited_requests']:,} requests cycling through all of them, none refused; "
            f"zone full: {'yes' if scale['limited_zone_full'] else 'no'}",
        ]
    text = "\n".join(lines) + "\n"
    (RESULTS / "latest.md").write_text(text)
    (RESULTS / "latest.json").write_text(json.dumps({"date": date, "machine": machine(), "rows": rows, "scale": scale,
                                                     "policy_ms": micro}, indent=2))
    chart(rows, RESULTS / "latest.png")
    print()
    print(text)


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r["variant"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(15, 0.45 * len(rows) + 1.5), sharey=True)
    colors = ["#888" if n == "no auth" else "#2a7" if n.startswith("module") else "#c54" for n in names]
    axes[0].barh(names, [r["instruction_ratio"] or 0 for r in rows], color=colors)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("share of no-auth throughput, by instructions per request (log)")
    axes[0].axvline(0.97, color="k", linestyle=":", linewidth=1)
    axes[1].barh(names, [r["rps"] or 0 for r in rows], color=colors)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("requests per second, wrk (log)")
    axes[0].invert_yaxis()
    fig.suptitle("ngx-ollama-auth against the Lua block and stock auth_basic (one nginx worker)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
