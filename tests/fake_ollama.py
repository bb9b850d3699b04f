"""A small stand-in for Ollama's HTTP API, for the tests: /api/tags, /api/ps, /api/generate and
/api/chat (streamed as NDJSON with chunked encoding, or whole with "stream": false), the
OpenAI-style /v1/models and /v1/chat/completions, and a plain {"status":"success"} for the other
endpoints the gate knows (pull, push, create, copy, show, blobs, ...). It records the method, path,
headers and raw body of every request it receives. `models` is what the listings list.

The answers that carry usage are written as Ollama writes them (its `server/routes.go`,
`middleware/openai.go`, `openai/openai.go` and the Anthropic middleware): native `/api/generate`
and `/api/chat` with `prompt_eval_count` and `eval_count` in the `"done": true` object,
`/api/embed` with `prompt_eval_count` after the vectors, `/v1/chat/completions` and
`/v1/completions` whole or as server-sent events (with the extra usage event, and for
completions the zero `usage` in every chunk, only when the request's
`stream_options.include_usage` asks for them), `/v1/embeddings`, and `/v1/messages` whole or
streamed (`message_start` with an estimate, `message_delta` with the real counts). The `/v1`
bodies are compact, in Go's member order, with a fixed `id` and `created`, so two runs of one
request give the same bytes.

Request headers steer an answer (the gate passes them on; absent, the defaults):
    X-Fake-Prompt-Tokens  prompt_eval_count / prompt_tokens / input_tokens (default 7)
    X-Fake-Words          streamed token chunks, one word each (default 9, the sky sentence)
    X-Fake-Eval-Count     eval_count / completion_tokens / output_tokens (default: the chunks)
    X-Fake-Estimate       message_start's input_tokens estimate in /v1/messages (default 1)
    X-Fake-Model          the model the answer names (default gemma3:1b; `=request`: the request's
                          `model` as sent, untrimmed, as Ollama echoes it)
    X-Fake-Delay          seconds between streamed chunks (default: chunk_delay)
    X-Fake-Wait           seconds to wait before the answer's headers (default 0)
    X-Fake-Embed-Bytes    about this many bytes of vectors in /api/embed's answer (default: small)
    X-Fake-Status         answer an inference endpoint with this error status instead
    X-Fake-Tag            requests in flight are counted per tag: `in_flight(tag)`, `max_in_flight(tag)`

For a fleet's poller (all optional; without them the answers are as above): `loaded` is what
/api/ps lists (default: `models`); `tags_raw` (bytes) replaces the whole /api/tags answer,
status line and headers included, for hostile or broken members; `tags_delay` seconds pass before
/api/tags answers. All three are attributes of `FakeOllama`, changeable while it runs."""

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "gemma3:1b"
WORDS = ["The", " sky", " is", " blue", " because", " of", " Rayleigh", " scattering", "."]
PROMPT_TOKENS = 7
CREATED = 1735689600  # a fixed `created`, so that two runs give the same bytes


def go_json(value):
    """JSON as Go's encoding/json writes it: compact, UTF-8, members in the order given."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def words(count):
    """`count` token chunks: the sky sentence, repeated as far as needed."""
    return [WORDS[i % len(WORDS)] for i in range(count)]


class Steer:
    """What the X-Fake-* request headers ask of one answer."""

    def __init__(self, headers, server):
        def number(name, default, kind=int):
            value = headers.get(name)
            return kind(value) if value not in (None, "") else default
        self.prompt = number("X-Fake-Prompt-Tokens", PROMPT_TOKENS)
        self.words = words(number("X-Fake-Words", len(WORDS)))
        self.eval_count = number("X-Fake-Eval-Count", len(self.words))
        self.estimate = number("X-Fake-Estimate", 1)
        self.model = headers.get("X-Fake-Model") or MODEL
        self.delay = number("X-Fake-Delay", server.chunk_delay, float)
        self.wait = number("X-Fake-Wait", 0.0, float)
        self.embed_bytes = number("X-Fake-Embed-Bytes", 0)
        self.status = number("X-Fake-Status", 0)
        self.tag = headers.get("X-Fake-Tag")

    @property
    def text(self):
        return "".join(self.words)

    @property
    def total(self):
        return self.prompt + self.eval_count


class ClientGone(Exception):
    pass


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

    def _send_json(self, status, payload, compact=False):
        """Native answers as json.dumps writes them (spaces: the scanner must not care); `/v1` ones
        compact, as Go writes them."""
        data = (go_json(payload) if compact else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if self.server.gzip_answers:  # as a proxy that compresses would send them
            import gzip
            data = gzip.compress(data)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._answered()
        self.wfile.write(data)

    def _begin_chunked(self, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data):
        """One chunk of a chunked answer, flushed at once; b"" ends the answer."""
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as gone:
            raise ClientGone() from gone

    def _stream(self, lines, delay=None):
        """NDJSON, a line a chunk, `delay` seconds between two."""
        self._paced([(json.dumps(line) + "\n").encode() for line in lines], "application/x-ndjson",
                    self.server.chunk_delay if delay is None else delay)

    def _events(self, events, delay):
        """Server-sent events (each a whole `data: ...\\n\\n` text), an event a chunk."""
        self._paced([event.encode() for event in events], "text/event-stream", delay)

    def _paced(self, chunks, content_type, delay):
        """A chunked answer, `delay` seconds between two chunks; none after the last (the final
        object, or `[DONE]`): the answer ends as soon as its last chunk is out, as Ollama's does."""
        self._begin_chunked(content_type)
        for i, data in enumerate(chunks):
            if i:
                time.sleep(delay)
            self._chunk(data)
        self._answered()
        self._chunk(b"")

    def do_HEAD(self):
        self._record()
        self.send_response(200 if self.path.split("?")[0] != "/upstream-401" else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_OPTIONS(self):
        """A CORS preflight, answered as Ollama's gin-contrib/cors does for an allowed origin."""
        self._record()
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
        self.send_header("Access-Control-Allow-Methods", "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS")
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
        elif self.path == "/api/tags" and (self.server.tags_raw is not None or self.server.tags_delay):
            self._hostile_tags()
        elif self.path == "/api/tags":
            self._send_json(200, {"models": [{"name": m, "model": m, "size": 815319791, "digest": "e0a42594d802",
                                              "details": {"family": m.split(":")[0]}} for m in self.server.models]})
        elif self.path == "/api/ps":
            loaded = self.server.models if self.server.loaded is None else self.server.loaded
            self._send_json(200, {"models": [{"name": m, "model": m, "size": 1, "expires_at": "2026-01-01T00:00:00Z"}
                                             for m in loaded]})
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

    def _hostile_tags(self):
        """/api/tags as `tags_raw` says (raw bytes, then the connection closes), after `tags_delay`."""
        time.sleep(self.server.tags_delay)
        raw = self.server.tags_raw
        self.close_connection = True
        try:
            if raw is None:
                data = json.dumps({"models": [{"name": m, "model": m} for m in self.server.models]}).encode()
                raw = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
            self.wfile.write(raw)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        self._record()
        body = self._body()
        steer = Steer(self.headers, self.server)
        self.server.enter(steer.tag)
        self._flight_tag, self._in_flight = steer.tag, True
        try:
            self._post(body, steer)
        except (ClientGone, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self._answered()

    def _answered(self):
        """A POST stops counting as in flight just before its last bytes go out: once the gate
        has them, the answer is over (as Ollama's is), and the next request may come at once."""
        if getattr(self, "_in_flight", False):
            self._in_flight = False
            self.server.leave(self._flight_tag)

    def _post(self, body, steer):
        if self.path.startswith("/api/blobs/"):
            return self._send_json(201, {})
        if self.path.split("?")[0] == "/v1/audio/transcriptions":  # a multipart body; no counts
            return self._send_json(200, {"text": steer.text}, compact=True)
        if not isinstance(body, dict):
            return self._send_json(400, {"error": "invalid JSON"})
        if steer.model == "=request":
            steer.model = body.get("model")
        if steer.wait:
            time.sleep(steer.wait)
        if steer.status and self.path in ANSWERS:
            return self._send_json(steer.status, {"error": f"stand-in error {steer.status}"})
        if self.path in ANSWERS:
            return ANSWERS[self.path](self, body, steer)
        if self.path in OTHER_POSTS:
            return self._send_json(200, {"status": "success"})
        self._send_json(404, {"error": "not found"})

    # ----- native -----

    @staticmethod
    def _native_counts(steer):
        """The timing and count members of a final native object; Go omits a zero count."""
        counts = {"total_duration": 123456789, "load_duration": 1234567}
        if steer.prompt:
            counts["prompt_eval_count"] = steer.prompt
        counts["prompt_eval_duration"] = 2345678
        if steer.eval_count:
            counts["eval_count"] = steer.eval_count
        counts["eval_duration"] = 3456789
        return counts

    def _generate(self, body, steer):
        parts = [{"model": steer.model, "response": w, "done": False} for w in steer.words]
        final = {"model": steer.model, "response": "", "done": True, "done_reason": "stop", **self._native_counts(steer)}
        if body.get("stream", True):
            return self._stream(parts + [final], steer.delay)
        self._send_json(200, dict(final, response=steer.text))

    def _chat(self, body, steer):
        parts = [{"model": steer.model, "message": {"role": "assistant", "content": w}, "done": False}
                 for w in steer.words]
        final = {"model": steer.model, "message": {"role": "assistant", "content": ""}, "done": True,
                 "done_reason": "stop", **self._native_counts(steer)}
        if body.get("stream", True):
            return self._stream(parts + [final], steer.delay)
        self._send_json(200, dict(final, message={"role": "assistant", "content": steer.text}))

    def _embed(self, body, steer):
        """One answer, not streamed, but written in pieces as Go does for a large one: the count
        comes after all the vectors."""
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs else 1
        count = max(count, -(-steer.embed_bytes // len(VECTOR)))
        tail = {"total_duration": 14143917, "load_duration": 1019500}
        if steer.prompt:
            tail["prompt_eval_count"] = steer.prompt
        self._begin_chunked("application/json; charset=utf-8")
        self._chunk(b'{"model":' + go_json(steer.model).encode() + b',"embeddings":[')
        piece = []
        for i in range(count):
            piece.append((b"," if i else b"") + VECTOR)
            if len(piece) >= 8:
                self._chunk(b"".join(piece))
                piece = []
        if piece:
            self._chunk(b"".join(piece))
        self._chunk(b"]," + go_json(tail)[1:].encode())
        self._chunk(b"")

    # ----- OpenAI-shaped -----

    @staticmethod
    def _usage(steer):
        return {"prompt_tokens": steer.prompt, "completion_tokens": steer.eval_count, "total_tokens": steer.total}

    def _openai_chat(self, body, steer):
        if not body.get("stream"):
            return self._send_json(200, {
                "id": "chatcmpl-42", "object": "chat.completion", "created": CREATED, "model": steer.model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": steer.text}, "finish_reason": "stop"}],
                "usage": self._usage(steer)}, compact=True)

        def chunk(content, finish):
            return {"id": "chatcmpl-42", "object": "chat.completion.chunk", "created": CREATED, "model": steer.model,
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": finish}]}
        chunks = [chunk(w, None) for w in steer.words] + [chunk("", "stop")]
        if include_usage(body):
            chunks.append(dict(chunks[-1], choices=[], usage=self._usage(steer)))
        self._events([f"data: {go_json(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"], steer.delay)

    def _openai_completion(self, body, steer):
        if not body.get("stream"):
            return self._send_json(200, {
                "id": "cmpl-42", "object": "text_completion", "created": CREATED, "model": steer.model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"text": steer.text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": self._usage(steer)}, compact=True)
        asked = include_usage(body)

        def chunk(text, finish):
            c = {"id": "cmpl-42", "object": "text_completion", "created": CREATED,
                 "choices": [{"text": text, "index": 0, "finish_reason": finish}], "model": steer.model,
                 "system_fingerprint": "fp_ollama"}
            if asked:  # c.Usage = &openai.Usage{}: in every chunk
                c["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            return c
        chunks = [chunk(w, None) for w in steer.words] + [chunk("", "stop")]
        if asked:
            chunks.append(dict(chunks[-1], choices=[], usage=self._usage(steer)))
        self._events([f"data: {go_json(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"], steer.delay)

    def _openai_embeddings(self, body, steer):
        self._send_json(200, {
            "object": "list", "data": [{"object": "embedding", "embedding": [0.25, -0.5, 0.125], "index": 0}],
            "model": steer.model, "usage": {"prompt_tokens": steer.prompt, "total_tokens": steer.prompt}}, compact=True)

    # ----- Anthropic-shaped -----

    def _anthropic(self, body, steer):
        if not body.get("stream"):
            return self._send_json(200, {
                "id": "msg_42", "type": "message", "role": "assistant", "model": steer.model,
                "content": [{"type": "text", "text": steer.text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": steer.prompt, "output_tokens": steer.eval_count}}, compact=True)

        def event(name, data):
            return f"event: {name}\ndata: {go_json(data)}\n\n"
        events = [
            event("message_start", {"type": "message_start", "message": {
                "id": "msg_42", "type": "message", "role": "assistant", "model": steer.model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": steer.estimate, "output_tokens": 0}}}),
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}),
        ]
        events += [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": w}}) for w in steer.words]
        events += [
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"input_tokens": steer.prompt, "output_tokens": steer.eval_count}}),
            event("message_stop", {"type": "message_stop"}),
        ]
        self._events(events, steer.delay)

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


def include_usage(body):
    """Whether the request asks for usage in a stream, as Ollama reads `stream_options`."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# A 768-dimension vector, as Go writes float32s: about 7 KB.
VECTOR = go_json([round(((i * 7919) % 2000 - 1000) / 12345.0, 9) for i in range(768)]).encode()

ANSWERS = {"/api/generate": Handler._generate, "/api/chat": Handler._chat, "/api/embed": Handler._embed,
           "/v1/chat/completions": Handler._openai_chat, "/v1/completions": Handler._openai_completion,
           "/v1/embeddings": Handler._openai_embeddings, "/v1/messages": Handler._anthropic}
OTHER_POSTS = {"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/show", "/api/embeddings", "/v1/responses"}


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args):
        super().__init__(*args)
        self.flight_lock = threading.Lock()
        self.flight = defaultdict(int)
        self.flight_max = defaultdict(int)

    def enter(self, tag):
        with self.flight_lock:
            self.flight[tag] += 1
            self.flight_max[tag] = max(self.flight_max[tag], self.flight[tag])

    def leave(self, tag):
        with self.flight_lock:
            self.flight[tag] -= 1


class FakeOllama:
    def __init__(self, port=0, chunk_delay=0.02, models=(MODEL,), loaded=None):
        self.server = Server(("127.0.0.1", port), Handler)
        self.server.seen = []
        self.server.models = list(models)
        self.server.gzip_answers = False
        self.server.loaded = None if loaded is None else list(loaded)
        self.server.tags_raw = None
        self.server.tags_delay = 0.0
        self.server.chunk_delay = chunk_delay
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def seen(self):
        return self.server.seen

    def in_flight(self, tag):
        """POSTs with this X-Fake-Tag being answered now."""
        with self.server.flight_lock:
            return self.server.flight[tag]

    def max_in_flight(self, tag):
        """The most POSTs with this X-Fake-Tag that were ever answered at once."""
        with self.server.flight_lock:
            return self.server.flight_max[tag]

    def __enter__(self):
        self.thread.start()
        return self

    @property
    def loaded(self):
        return self.server.loaded

    @loaded.setter
    def loaded(self, models):
        self.server.loaded = None if models is None else list(models)

    @property
    def tags_raw(self):
        return self.server.tags_raw

    @tags_raw.setter
    def tags_raw(self, raw):
        self.server.tags_raw = raw

    @property
    def tags_delay(self):
        return self.server.tags_delay

    @tags_delay.setter
    def tags_delay(self, seconds):
        self.server.tags_delay = seconds

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(
        description="A stand-in for Ollama's HTTP API on 127.0.0.1, for trying the gate without "
                    "Ollama. X-Fake-* request headers steer its answers (see the module's docstring).")
    parser.add_argument("port", nargs="?", type=int, default=11434, help="the port to listen on (default 11434)")
    parser.add_argument("--models", type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
                        default=[MODEL], metavar="A,B,...",
                        help=f"the models /api/tags, /api/ps and /v1/models list (default {MODEL})")
    parser.add_argument("--chunk-delay", type=float, default=0.02, metavar="SECONDS",
                        help="seconds between two streamed chunks (default 0.02)")
    args = parser.parse_args(argv)
    if not args.models:
        parser.error("--models names no model")
    with FakeOllama(args.port, args.chunk_delay, args.models) as fake:
        print(f"stand-in Ollama on 127.0.0.1:{fake.port}, models {','.join(args.models)}", flush=True)
        fake.thread.join()


if __name__ == "__main__":
    main()
