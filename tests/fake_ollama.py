"""A small stand-in for Ollama's HTTP API, for the tests: /api/tags, /api/ps, /api/generate and
/api/chat (streamed as NDJSON with chunked encoding, or whole with "stream": false), the
OpenAI-style /v1/models and /v1/chat/completions, and a plain {"status":"success"} for the other
endpoints the gate knows (pull, push, create, copy, delete, show, embed, blobs, ...). It records
the method, path, headers and raw body of every request it receives. `models` is what the
listings list."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "gemma3:1b"
WORDS = ["The", " sky", " is", " blue", " because", " of", " Rayleigh", " scattering", "."]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _record(self):
        self.server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                                 "body": b""})

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.seen[-1]["body"] = raw
        try:
            return json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            return None

    def _send_json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if self.server.gzip_answers:  # as a proxy that compresses would send them
            import gzip
            data = gzip.compress(data)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, lines):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            data = (json.dumps(line) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(self.server.chunk_delay)
        self.wfile.write(b"0\r\n\r\n")

    def do_HEAD(self):
        self._record()
        self.send_response(200 if self.path.split("?")[0] != "/upstream-401" else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self._record()
        if self.path == "/":
            data = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/api/tags":
            self._send_json(200, {"models": [{"name": m, "model": m, "size": 815319791, "digest": "e0a42594d802",
                                              "details": {"family": m.split(":")[0]}} for m in self.server.models]})
        elif self.path == "/api/ps":
            self._send_json(200, {"models": [{"name": m, "model": m, "size": 1, "expires_at": "2026-01-01T00:00:00Z"}
                                             for m in self.server.models]})
        elif self.path == "/api/version":
            self._send_json(200, {"version": "0.12.0"})
        elif self.path.startswith("/v1/models/"):
            self._send_json(200, {"id": self.path[len("/v1/models/"):], "object": "model", "owned_by": "library"})
        elif self.path == "/upstream-401":
            # A server behind the gate with authentication of its own.
            data = b"upstream says no"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Upstream realm="inner"')
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/v1/models":
            self._send_json(200, {"object": "list",
                                  "data": [{"id": m, "object": "model", "owned_by": "library"} for m in self.server.models]})
        else:
            self._send_json(404, {"error": "not found"})

    def do_POST(self):
        self._record()
        body = self._body()
        if self.path.startswith("/api/blobs/"):
            return self._send_json(201, {})
        if not isinstance(body, dict):
            return self._send_json(400, {"error": "invalid JSON"})
        stream = body.get("stream", True)
        if self.path == "/api/generate":
            parts = [{"model": MODEL, "response": w, "done": False} for w in WORDS]
            final = {"model": MODEL, "response": "", "done": True, "done_reason": "stop"}
            if stream:
                return self._stream(parts + [final])
            return self._send_json(200, dict(final, response="".join(WORDS)))
        if self.path == "/api/chat":
            parts = [{"model": MODEL, "message": {"role": "assistant", "content": w}, "done": False} for w in WORDS]
            final = {"model": MODEL, "message": {"role": "assistant", "content": ""}, "done": True}
            if stream:
                return self._stream(parts + [final])
            return self._send_json(200, dict(final, message={"role": "assistant", "content": "".join(WORDS)}))
        if self.path == "/v1/chat/completions":
            return self._send_json(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(WORDS)}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": len(WORDS), "total_tokens": 1 + len(WORDS)}})
        if self.path in OTHER_POSTS:
            return self._send_json(200, {"status": "success"})
        self._send_json(404, {"error": "not found"})

    def do_DELETE(self):
        self._record()
        self._body()
        if self.path == "/api/delete":
            return self._send_json(200, {"status": "success"})
        self._send_json(404, {"error": "not found"})

    def do_PUT(self):
        self._record()
        self._body()
        self._send_json(404, {"error": "not found"})


OTHER_POSTS = {"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/show", "/api/embed", "/api/embeddings",
               "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"}


class FakeOllama:
    def __init__(self, port=0, chunk_delay=0.02):
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.server.seen = []
        self.server.models = [MODEL]
        self.server.gzip_answers = False
        self.server.chunk_delay = chunk_delay
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def seen(self):
        return self.server.seen

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    import sys
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 11434
    with FakeOllama(port) as fake:
        print(f"stand-in Ollama on 127.0.0.1:{fake.port}", flush=True)
        fake.thread.join()
