"""Real client libraries through the gate: the `ollama` Python library (with headers=) and the
OpenAI SDK (base_url and api_key), as users configure them. They talk to the stand-in Ollama."""

import pytest

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
    # The SDK hands over the "error" field of Ollama's error shape as the error's body.
    assert refused.value.body.startswith("unauthorized: a valid API key is required")


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
    # The SDK takes the body's "error" member (Ollama's error shape) as the error's body.
    assert denied.value.body == 'forbidden: this key may not use model "llama3"', denied.value.body
    completion = sdk.chat.completions.create(model="gemma3:1b", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content.startswith("The sky")
    assert [m.id for m in sdk.models.list().data] == ["gemma3:1b"]
