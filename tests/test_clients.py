"""Real client libraries through the gate: the `ollama` Python library (with headers=) and the
OpenAI SDK (base_url and api_key), as users configure them. They talk to the stand-in Ollama."""

import pytest

from conftest import wait_until
from test_bearer import gated

import ollama
import openai


def test_ollama_library_with_a_bearer_header(gate):
    gated(gate)
    client = ollama.Client(host=f"http://127.0.0.1:{gate.port}", headers={"Authorization": "Bearer admin-key-abcdef"})
    assert client.list().models[0].model == "gemma3:1b"
    parts = [chunk.response for chunk in client.generate(model="gemma3:1b", prompt="sky?", stream=True)]
    assert "".join(parts) == "The sky is blue because of Rayleigh scattering."
    reply = client.chat(model="gemma3:1b", messages=[{"role": "user", "content": "sky?"}])
    assert reply.message.content == "The sky is blue because of Rayleigh scattering."


def test_ollama_library_shows_the_gate_s_message_on_401(gate):
    gated(gate)
    client = ollama.Client(host=f"http://127.0.0.1:{gate.port}", headers={"Authorization": "Bearer wrong"})
    with pytest.raises(ollama.ResponseError) as refused:
        client.generate(model="gemma3:1b", prompt="x", stream=False)
    assert refused.value.status_code == 401
    assert refused.value.error.startswith("unauthorized: a valid API key is required")


def test_openai_sdk_with_base_url_and_api_key(gate):
    gated(gate)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{gate.port}/v1", api_key="my-secret-api-key-1", max_retries=0)
    assert [m.id for m in client.models.list()] == ["gemma3:1b"]
    completion = client.chat.completions.create(model="gemma3:1b", messages=[{"role": "user", "content": "sky?"}])
    assert completion.choices[0].message.content.startswith("The sky is blue")
    stranger = openai.OpenAI(base_url=f"http://127.0.0.1:{gate.port}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.models.list()
    assert refused.value.status_code == 401
    # On /v1 the gate answers in OpenAI's error shape: the SDK puts its message in the
    # exception's text, and the rest in its attributes.
    assert refused.value.body["message"].startswith("unauthorized: a valid API key is required")
    assert "unauthorized: a valid API key is required" in str(refused.value)
    assert refused.value.type == "authentication_error" and refused.value.code == "invalid_api_key"


POLICY_KEYS = "k-chat chatter models=gemma3* scopes=read,infer\n"


def test_client_libraries_show_policy_refusals(gate):
    """A key limited to gemma3 models and read,infer: what the ollama and openai libraries show."""
    gated(gate, keys=POLICY_KEYS)
    client = ollama.Client(host=f"http://127.0.0.1:{gate.port}", headers={"Authorization": "Bearer k-chat"})
    assert [m.model for m in client.list().models] == ["gemma3:1b"]
    reply = client.chat(model="gemma3:1b", messages=[{"role": "user", "content": "sky?"}])
    assert reply.message.content.startswith("The sky")
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model="llama3", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 403
    assert refused.value.error == 'forbidden: this key may not use model "llama3"'
    with pytest.raises(ollama.ResponseError) as refused:
        client.pull("gemma3:1b")
    assert refused.value.status_code == 403 and '"manage" scope' in refused.value.error
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{gate.port}/v1", api_key="k-chat", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "x"}])
    assert denied.value.body["message"] == 'forbidden: this key may not use model "llama3"', denied.value.body
    assert str(denied.value) == 'Error code: 403 - forbidden: this key may not use model "llama3"'
    assert denied.value.type == "permission_error"
    completion = sdk.chat.completions.create(model="gemma3:1b", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content.startswith("The sky")
    assert [m.id for m in sdk.models.list().data] == ["gemma3:1b"]


USAGE_KEYS = "k-counted counted\nk-limited limited requests=2/1m\n"


def counted_gate(gate):
    gated(gate, keys=USAGE_KEYS, location_extra="ollama_auth_usage usage;",
          server_extra="location = /metrics { ollama_auth_metrics usage; allow 127.0.0.1; deny all; }",
          http_extra="ollama_auth_zone usage 1m;")


def metric(gate, line_start, expected):
    """The exposition's lines that start so, once they are as expected (a request is counted in
    the log phase, just after its answer went out), or as they are after 5 seconds."""
    lines = None

    def look():
        nonlocal lines
        text = gate.request("/metrics").body.decode()
        lines = [line for line in text.splitlines() if line.startswith(line_start)]
        return lines == expected

    wait_until(look, 5)
    return lines


def test_openai_sdk_streams_through_a_counting_gate_and_is_counted(gate):
    """The SDK streams a chat without asking for usage: the gate asks Ollama for it and takes it
    back out, so the SDK sees no usage chunk, and the tokens are counted all the same."""
    counted_gate(gate)
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{gate.port}/v1", api_key="k-counted", max_retries=0)
    chunks = list(sdk.chat.completions.create(model="gemma3:1b", stream=True,
                                              messages=[{"role": "user", "content": "sky?"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("The sky is blue")
    assert all(c.usage is None and c.choices for c in chunks), "no usage the SDK did not ask for"
    asked = list(sdk.chat.completions.create(model="gemma3:1b", stream=True, stream_options={"include_usage": True},
                                             messages=[{"role": "user", "content": "sky?"}]))
    assert asked[-1].choices == [] and asked[-1].usage.completion_tokens == 9
    expected = ['ollama_auth_completion_tokens_total{user="counted",model="gemma3:1b"} 18']
    assert metric(gate, 'ollama_auth_completion_tokens_total{user="counted",model="gemma3:1b"}', expected) == expected


def test_ollama_library_streams_through_a_counting_gate_and_sees_the_429(gate):
    counted_gate(gate)
    client = ollama.Client(host=f"http://127.0.0.1:{gate.port}", headers={"Authorization": "Bearer k-limited"})
    parts = [chunk.response for chunk in client.generate(model="gemma3:1b", prompt="sky?", stream=True)]
    assert "".join(parts) == "The sky is blue because of Rayleigh scattering."
    assert client.chat(model="gemma3:1b", messages=[{"role": "user", "content": "x"}]).message.content
    with pytest.raises(ollama.ResponseError) as limited:
        client.chat(model="gemma3:1b", messages=[{"role": "user", "content": "x"}])
    assert limited.value.status_code == 429 and limited.value.error == "rate limited: requests 2/1m"
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{gate.port}/v1", api_key="k-limited", max_retries=0)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(model="gemma3:1b", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 429 and refused.value.response.headers["retry-after"].isdigit()
    assert "rate limited: requests 2/1m" in str(refused.value)
    expected = ['ollama_auth_requests_total{user="limited",model="gemma3:1b",code="200"} 2']
    assert metric(gate, 'ollama_auth_requests_total{user="limited"', expected) == expected
    expected = ['ollama_auth_refused_total{reason="rate_limited"} 2']
    assert metric(gate, 'ollama_auth_refused_total{reason="rate_limited"}', expected) == expected
