"""OpenAI-compatible chat servers (vLLM, Ollama, llama.cpp's server, Together…) over plain HTTP (providers/http.py).

`base_url` may end in `/v1` (as these servers document it: http://localhost:11434/v1) or not
(http://localhost:8000); the routes used are `<…>/v1/chat/completions` and `<…>/v1/models`.
One attempt per call; retries live in providers/retry.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from models_app.simulator.responder import message_text

from .base import ChatMessage, ChatResult, ModelInfo, ProviderSettings, prepared_messages
from .errors import PermanentProviderError
from .http import ProviderHttpClient
from .http_provider import HttpProvider
from .usage import chat_result, malformed_usage


def api_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


class OpenAICompatibleProvider(HttpProvider):
    def __init__(
        self, settings: ProviderSettings, *, http_client: ProviderHttpClient | None = None, refusal: str | None = None
    ) -> None:
        if not settings.base_url:
            raise ValueError(f"provider '{settings.name}': an OpenAI-compatible provider needs a base_url")
        headers = {"Accept": "application/json"}
        if settings.api_key:  # local servers (Ollama, llama.cpp) need none
            headers["Authorization"] = f"Bearer {settings.api_key}"
        super().__init__(settings, http_client=http_client, client_base_url=api_root(settings.base_url), client_headers=headers,
                         refusal=refusal)

    def chat(
        self, *, model: str, messages: Sequence[ChatMessage], parameters: Mapping[str, Any] | None = None
    ) -> ChatResult:
        prepared = prepared_messages(messages, strip_markers=self.settings.strip_answer_markers)
        options = {("seed" if key == "random_seed" else key): value for key, value in (parameters or {}).items()}
        if options.get("stream"):
            raise PermanentProviderError("streaming is not supported by the provider layer", provider=self.name)
        payload = {**{key: value for key, value in options.items() if value is not None}, "model": model, "messages": prepared}
        body, response, latency_ms = self._send("POST", "chat/completions", "chat completion", json_body=payload, model=model)
        try:
            choice = body["choices"][0]
            message = choice.get("message") or {}
            text = message_text(message.get("content"))
            finish_reason = str(choice.get("finish_reason") or "stop")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._unreadable_answer("chat completion", "no choices[0].message",
                                          status_code=response.status_code, answer=response.text) from None
        usage = body.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise malformed_usage(provider=self.name, usage=usage)
        return chat_result(provider=self.name, model=model, usage=usage, messages=prepared, text=text, latency_ms=latency_ms,
                           finish_reason=finish_reason, answered_by=str(body.get("model") or ""))

    def list_models(self) -> list[ModelInfo]:
        body, _, _ = self._send("GET", "models", "list models")
        return [ModelInfo(id=str(item["id"])) for item in body.get("data") or [] if isinstance(item, dict) and "id" in item]

    # ---- plumbing ----------------------------------------------------------------------------
    def _send(
        self, method: str, path: str, operation: str, *, json_body: dict[str, Any] | None = None, model: str | None = None
    ) -> tuple[dict[str, Any], httpx.Response, float]:
        """One request (`path` below the API root); its answer's JSON object, the answer and the
        latency in milliseconds. Anything but a 2xx is the provider's error — a redirect too: the
        client follows none."""
        response, latency_ms = self._timed_call(
            operation, lambda: self._http.request(method, path, json=json_body), model=model
        )
        if not 200 <= response.status_code < 300:
            raise self._error_from_answer(operation=operation, status_code=response.status_code, body=response.text,
                                          headers=response.headers, model=model)
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise self._unreadable_answer(operation, "something that is not a JSON object",
                                          status_code=response.status_code, answer=response.text)
        return body, response, latency_ms

