"""What the Mistral provider changes about the SDK's per-call work (providers/mistral_sdk_caches.py)
changes no answer: the wrapper models and type hints are remembered, results and errors stay the
same; and provider errors cross a process boundary intact (the bench's reference pool pickles them)."""

from __future__ import annotations

import pickle
import typing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from mistralai import models as sdk_models
from mistralai.utils import queryparams, serializers

from models_app.providers import ProviderAuthError, TransientProviderError, mistral_sdk_caches
from models_app.providers.mistral import MistralProvider  # noqa: F401 - importing it installs the caches


def test_the_caches_are_installed_when_the_mistral_provider_is_imported() -> None:
    assert mistral_sdk_caches.install() is True
    assert serializers.create_model.__name__ == "create_model_once"
    assert queryparams.get_type_hints is mistral_sdk_caches._type_hints


def test_a_wrapper_model_is_built_once_per_name_and_fields() -> None:
    built: list[tuple[str, dict[str, Any]]] = []

    def create_model(name: str, /, **fields: Any) -> object:
        built.append((name, fields))
        return object()

    remembering = mistral_sdk_caches._remembering_create_model(create_model)
    config = {"populate_by_name": True, "arbitrary_types_allowed": True}
    first = remembering("Unmarshaller", body=(list[int], ...), __config__=dict(config))
    assert remembering("Unmarshaller", body=(list[int], ...), __config__=dict(config)) is first
    assert remembering("Marshaller", body=(list[int], ...), __config__=dict(config)) is not first
    assert remembering("Unmarshaller", body=(list[str], ...), __config__=dict(config)) is not first
    assert len(built) == 3
    # A field definition that cannot be a key (here a list) is built every time, as the SDK does.
    remembering("Unmarshaller", body=([1], ...))
    remembering("Unmarshaller", body=([1], ...))
    assert len(built) == 5


def test_remembered_type_hints_are_copies() -> None:
    hints = mistral_sdk_caches._type_hints(sdk_models.ChatCompletionRequest)
    assert hints == typing.get_type_hints(sdk_models.ChatCompletionRequest)
    hints.clear()
    assert mistral_sdk_caches._type_hints(sdk_models.ChatCompletionRequest)


def test_the_sdk_still_validates_and_refuses_what_it_did() -> None:
    response = {
        "id": "cmpl-1", "object": "chat.completion", "model": "open-mistral-7b", "created": 1,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    for _ in range(2):  # the second time through the remembered wrapper model
        parsed = serializers.unmarshal(response, sdk_models.ChatCompletionResponse)
        assert isinstance(parsed, sdk_models.ChatCompletionResponse)
        assert parsed.choices[0].message.content == "42" and parsed.usage.total_tokens == 4
        with pytest.raises(Exception, match="validation error"):
            serializers.unmarshal({"choices": "not a list"}, sdk_models.ChatCompletionResponse)


def _raise_in_child(kind: str) -> None:
    if kind == "transient":
        raise TransientProviderError("slow down", provider="p", status_code=429, retry_after=2.5)
    raise ProviderAuthError("bad key", provider="p", status_code=401, provider_answer="no")


def test_provider_errors_survive_pickling_and_a_process_pool() -> None:
    error = TransientProviderError("slow down", provider="p", status_code=429, retry_after=2.5)
    error.add_note("after falling back")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.provider, copy.status_code, copy.retry_after, copy.__notes__) == (
        TransientProviderError, "slow down", "p", 429, 2.5, ["after falling back"]
    )
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(TransientProviderError, match="slow down") as raised:
            pool.submit(_raise_in_child, "transient").result(timeout=60)
        assert raised.value.retry_after == 2.5
        with pytest.raises(ProviderAuthError, match="bad key") as refused:
            pool.submit(_raise_in_child, "auth").result(timeout=60)
        assert refused.value.provider_answer == "no"
