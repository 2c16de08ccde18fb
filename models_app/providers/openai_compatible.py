"""OpenAI-compatible chat servers (vLLM, Ollama, llama.cpp's server, Together…) over plain HTTP (providers/http.py).

`base_url` may end in `/v1` (as these servers document it: http://localhost:11434/v1) or not
(http://localhost:8000); the routes used are `<…>/v1/chat/completions` and `<…>/v1/models`.
One attempt per call; retries live in providers/retry.py.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .base import ChatMessage, ChatResult, ModelInfo, ProviderSettings, prepared_messages
from .errors import PermanentProviderError, ProviderError, TransientProviderError, error_from_response
from .http import ProviderHttpClient, new_http_client
from .throttle import CallGate

CHARS_PER_TOKEN_ESTIMATE = 4  # only when a server reports no usage (some llama.cpp builds)


def api_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


class OpenAICompatibleProvider:
    def __init__(self, settings: ProviderSettings, *, http_client: ProviderHttpClient | None = None) -> None:
        if not settings.base_url:
            raise ValueError(f"provider '{settings.name}': an OpenAI-compatible provider needs a base_url")
        self.settings = settings
        self._owns_http_client = http_client is None
        headers = {"Accept": "application/json"}
        if settings.api_key:  # local servers (Ollama, llama.cpp) need none
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self._http = http_client or new_http_client(settings, base_url=api_root(settings.base_url), headers=headers)
        self._gate = CallGate(
            provider=settings.name,
            max_concurrency=settings.max_concurrency,
            rate_limit_per_minute=settings.rate_limit_per_minute,
            wait_limit_seconds=settings.timeout_seconds,
        )

    @property
    def name(self) -> str:
        return self.settings.name

    def close(self) -> None:
        if self._owns_http_client:
            self._http.close()

    def chat(
        self, *, model: str, messages: Sequence[ChatMessage], parameters: Mapping[str, Any] | None = None
    ) -> ChatResult:
        prepared = prepared_messages(messages, strip_markers=self.settings.strip_answer_markers)
        options = {("seed" if key == "random_seed" else key): value for key, value in (parameters or {}).items()}
        if options.get("stream"):
            raise PermanentProviderError("streaming is not supported by the provider layer", provider=self.name)
        payload = {**{key: value for key, value in options.items() if value is not None}, "model": model, "messages": prepared}
        started_at: list[float] = []
        response = self._send("POST", "/chat/completions", "chat completion", json_body=payload, model=model, started_at=started_at)
        latency_ms = (time.perf_counter() - started_at[0]) * 1000
        body = self._json(response, "chat completion")
        try:
            choice = body["choices"][0]
            message = choice.get("message") or {}
            text = _content_text(message.get("content"))
            finish_reason = str(choice.get("finish_reason") or "stop")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise PermanentProviderError(
                f"provider '{self.name}' answered the chat completion without choices[0].message",
                provider=self.name,
                status_code=response.status_code,
                provider_answer=response.text,
            ) from None
        usage = body.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        if prompt_tokens is None:
            prompt_tokens = _estimate_tokens("".join(_content_text(m.get("content")) for m in prepared))
        if completion_tokens is None:
            completion_tokens = _estimate_tokens(text)
        return ChatResult(
            text=text,
            prompt_tokens=int(prompt_tokens),
            completion_tokens=int(completion_tokens),
            latency_ms=round(latency_ms, 2),
            finish_reason=finish_reason,
            model=str(body.get("model") or model),
            provider=self.name,
        )

    def list_models(self) -> list[ModelInfo]:
        response = self._send("GET", "/models", "list models")
        body = self._json(response, "list models")
        return [ModelInfo(id=str(item["id"])) for item in body.get("data") or [] if isinstance(item, dict) and "id" in item]

    # ---- plumbing ----------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        json_body: dict[str, Any] | None = None,
        model: str | None = None,
        started_at: list[float] | None = None,
    ) -> httpx.Response:
        try:
            with self._gate.admit():
                if started_at is not None:
                    started_at.append(time.perf_counter())  # latency is the server's, not our queueing
                response = self._http.request(method, path.lstrip("/"), json=json_body)
        except ProviderError:
            raise
        except httpx.TimeoutException as error:
            raise TransientProviderError(
                f"provider '{self.name}' timed out after {self.settings.timeout_seconds:g}s on {operation}",
                provider=self.name,
            ) from error
        except httpx.TransportError as error:
            raise TransientProviderError(
                f"cannot reach provider '{self.name}' at {self.settings.base_url} for {operation}: {error}",
                provider=self.name,
            ) from error
        if not 200 <= response.status_code < 300:  # a redirect too: the client follows none
            raise error_from_response(
                provider=self.name,
                operation=operation,
                status_code=response.status_code,
                body=response.text,
                retry_after_header=response.headers.get("retry-after"),
                location_header=response.headers.get("location"),
                api_key_env=self.settings.api_key_env,
                api_key_present=bool(self.settings.api_key),
                model=model,
            )
        return response

    def _json(self, response: httpx.Response, operation: str) -> dict[str, Any]:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise PermanentProviderError(
                f"provider '{self.name}' answered {operation} with something that is not a JSON object",
                provider=self.name,
                status_code=response.status_code,
                provider_answer=response.text,
            )
        return body


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE))
