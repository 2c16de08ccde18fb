"""Mistral through the official `mistralai` SDK (1.12.x): chat, models, files and fine-tuning jobs.

Pinned at 1.12.4, the last 1.x: 2.0 moved the client to `mistralai.client` and later 2.x releases no
longer ship `fine_tuning.jobs`, which Genesis drives; 3.x moves to a
different HTTP stack. The "simulator" provider kind is this class pointed at the simulator's URL.

One attempt per call: the SDK's retries are disabled (retry_config=None) because retries live in
providers/retry.py only. The SDK's debug logger is replaced by a no-op because it would print the
Authorization header when MISTRAL_DEBUG is set. mistral_sdk_caches keeps the SDK from rebuilding
its pydantic wrapper models and type hints on every call (most of its CPU per call otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from mistralai import Mistral
from mistralai import models as sdk_models
from mistralai.types import UNSET
from mistralai.types.basemodel import Unset
from mistralai.utils.logger import NoOpLogger

from . import mistral_sdk_caches
from .base import (
    ChatMessage,
    ChatResult,
    FineTuningJobSnapshot,
    JobCheckpoint,
    JobEvent,
    ModelInfo,
    ProviderSettings,
    UploadedFile,
    prepared_messages,
)
from .errors import PermanentProviderError, ProviderError, UnsupportedParameterError, body_excerpt
from .http import ProviderHttpClient, answers_limited_to
from .http_provider import HttpProvider
from .usage import chat_result

mistral_sdk_caches.install()

# Chat parameters the SDK's chat.complete accepts, and the names Genesis may use for them.
_CHAT_PARAMETERS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "random_seed",
        "response_format",
        "tools",
        "tool_choice",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "safe_prompt",
        "parallel_tool_calls",
        "prediction",
        "prompt_mode",
        "metadata",
    }
)
_PARAMETER_ALIASES = {"seed": "random_seed"}


class _SynchronousOnly:
    """Stands in for the SDK's async HTTP client. Genesis calls the SDK synchronously; left to
    itself the SDK would make an httpx.AsyncClient per provider (another CA-bundle load, ~50 ms) and
    close it with asyncio.run() when the provider goes."""

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        raise RuntimeError("MistralProvider calls the Mistral SDK synchronously only")

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        raise RuntimeError("MistralProvider calls the Mistral SDK synchronously only")

    async def aclose(self) -> None:
        return None


class MistralProvider(HttpProvider):
    default_address = "the Mistral API"

    def __init__(
        self, settings: ProviderSettings, *, http_client: ProviderHttpClient | None = None, refusal: str | None = None
    ) -> None:
        super().__init__(settings, http_client=http_client, refusal=refusal)
        self._sdk = Mistral(
            # None, not "": an empty key must reach the provider as "no key" (and a clear 401).
            api_key=settings.api_key or None,
            server_url=settings.base_url or None,
            client=self._http,  # type: ignore[arg-type]  # duck-typed: the SDK calls only build_request, send and close
            async_client=_SynchronousOnly(),
            retry_config=None,
            timeout_ms=int(settings.timeout_seconds * 1000),
            debug_logger=NoOpLogger(),
        )

    def load_lazy_parts(self) -> None:
        """Import the SDK's chat module now rather than on the first call (factory.warm_up)."""
        self._sdk.chat  # noqa: B018 - the attribute loads the module

    # ---- chat and models ---------------------------------------------------------------------
    def chat(
        self, *, model: str, messages: Sequence[ChatMessage], parameters: Mapping[str, Any] | None = None
    ) -> ChatResult:
        options = self._chat_options(parameters or {})
        prepared = prepared_messages(messages, strip_markers=self.settings.strip_answer_markers)
        response, latency_ms = self._timed_call(
            "chat completion", lambda: self._sdk.chat.complete(model=model, messages=prepared, **options), model=model  # type: ignore[arg-type]  # plain dicts: the SDK validates them into its message types
        )
        if not response.choices:
            raise PermanentProviderError(
                f"provider '{self.name}' answered the chat completion without any choice", provider=self.name
            )
        choice = response.choices[0]
        text = _content_text(choice.message.content)
        # The SDK fills a count the answer left out with 0: only those the answer gave are the provider's.
        reported: dict[str, Any] = {name: getattr(response.usage, name) for name in ("prompt_tokens", "completion_tokens")
                    if name in response.usage.model_fields_set}
        return chat_result(provider=self.name, model=model, usage=reported, messages=prepared, text=text, latency_ms=latency_ms,
                           finish_reason=str(choice.finish_reason), answered_by=response.model or "")

    def list_models(self) -> list[ModelInfo]:
        listing = self._call("list models", lambda: self._sdk.models.list())
        return [_model_info(card) for card in listing.data or []]

    def retrieve_model(self, *, model_id: str) -> ModelInfo:
        card = self._call("retrieve model", lambda: self._sdk.models.retrieve(model_id=model_id), model=model_id)
        return _model_info(card)

    # ---- files and fine-tuning jobs ----------------------------------------------------------
    def upload_file(self, *, filename: str, content: bytes, purpose: str = "fine-tune") -> UploadedFile:
        uploaded = self._call(
            "upload a training file",
            lambda: self._sdk.files.upload(file={"file_name": filename, "content": content}, purpose=purpose),  # type: ignore[arg-type]  # a str: the SDK accepts values its Literal does not list yet
            refusal_is_expected=True,
        )
        return _uploaded_file(uploaded)

    def retrieve_file(self, *, file_id: str) -> UploadedFile:
        stored = self._call(
            f"retrieve file {file_id}", lambda: self._sdk.files.retrieve(file_id=file_id), refusal_is_expected=True
        )
        return _uploaded_file(stored)

    def download_file(self, *, file_id: str, max_bytes: int) -> bytes:
        """The content of file `file_id` (GET /v1/files/{file_id}/content, the SDK's files.download), read
        up to `max_bytes`: a larger file raises ProviderAnswerTooLarge, read no further than that."""
        with answers_limited_to(max_bytes):
            response = self._call(
                f"download file {file_id}", lambda: self._sdk.files.download(file_id=file_id), refusal_is_expected=True
            )
        # Read already (providers/http.py reads every answer whole, within the limit); read() says so to httpx.
        return response.read()

    def create_job(
        self,
        *,
        base_model: str,
        training_file_ids: Sequence[str],
        validation_file_ids: Sequence[str] = (),
        hyperparameters: Mapping[str, Any] | None = None,
        suffix: str | None = None,
        auto_start: bool = False,
    ) -> FineTuningJobSnapshot:
        created = self._call(
            "create a fine-tuning job",
            lambda: self._sdk.fine_tuning.jobs.create(
                model=base_model,
                training_files=[{"file_id": file_id, "weight": 1} for file_id in training_file_ids],  # type: ignore[arg-type]  # plain dicts, validated by the SDK
                validation_files=list(validation_file_ids) or UNSET,
                hyperparameters=dict(hyperparameters or {}),  # type: ignore[arg-type]  # plain dict, validated by the SDK
                suffix=suffix if suffix else UNSET,
                auto_start=auto_start,
            ),
            refusal_is_expected=True,
        )
        if isinstance(created, sdk_models.LegacyJobMetadataOut):
            # What Mistral answers to a dry run: an estimate, not a job.
            raise PermanentProviderError(
                f"provider '{self.name}' answered job creation with metadata only ({created.details})",
                provider=self.name,
            )
        return _job_snapshot(created)

    def list_jobs(
        self, *, page: int = 0, page_size: int = 100, base_model: str | None = None, status: str | None = None
    ) -> list[FineTuningJobSnapshot]:
        listing = self._call(
            "list fine-tuning jobs",
            lambda: self._sdk.fine_tuning.jobs.list(
                page=page, page_size=page_size, model=base_model or UNSET, status=status or UNSET  # type: ignore[arg-type]  # any status the provider names, passed through
            ),
            refusal_is_expected=True,
        )
        return [_job_snapshot(job) for job in listing.data or []]

    def get_job(self, *, job_id: str) -> FineTuningJobSnapshot:
        return self._job_call(f"get fine-tuning job {job_id}", lambda: self._sdk.fine_tuning.jobs.get(job_id=job_id))

    def start_job(self, *, job_id: str) -> FineTuningJobSnapshot:
        return self._job_call(f"start fine-tuning job {job_id}", lambda: self._sdk.fine_tuning.jobs.start(job_id=job_id))

    def cancel_job(self, *, job_id: str) -> FineTuningJobSnapshot:
        return self._job_call(f"cancel fine-tuning job {job_id}", lambda: self._sdk.fine_tuning.jobs.cancel(job_id=job_id))

    # ---- plumbing ----------------------------------------------------------------------------
    def _chat_options(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        for key, value in parameters.items():
            name = _PARAMETER_ALIASES.get(key, key)
            if name not in _CHAT_PARAMETERS:
                raise UnsupportedParameterError(
                    f"provider '{self.name}' (Mistral) does not take chat parameter '{key}'; "
                    f"supported: {', '.join(sorted(_CHAT_PARAMETERS | set(_PARAMETER_ALIASES)))}",
                    provider=self.name,
                )
            if value is not None:
                options[name] = value
        return options

    def _job_call(self, operation: str, request: Callable[[], Any]) -> FineTuningJobSnapshot:
        return _job_snapshot(self._call(operation, request, refusal_is_expected=True))

    def _provider_error(
        self, error: Exception, *, operation: str, model: str | None, refusal_is_expected: bool
    ) -> ProviderError | None:
        """The SDK's own errors first: an answer it could not read, an error answer, no answer."""
        if isinstance(error, sdk_models.ResponseValidationError) and 200 <= error.status_code < 300:
            return self._unreadable_answer(operation, f"a shape the SDK cannot read: {body_excerpt(self._redact(error.message))}",
                                           status_code=error.status_code, answer=error.body)
        if isinstance(error, sdk_models.MistralError) and 200 <= error.status_code < 300:
            # A success the SDK does not take (a file's content under another Content-Type than the one it
            # expects): not a refusal. Its body is left out — a file's content is not for messages and logs.
            return PermanentProviderError(
                f"provider '{self.name}' answered {operation} with a Content-Type the SDK does not accept "
                f"({body_excerpt(error.headers.get('content-type') or 'none')}, {error.status_code})",
                provider=self.name, status_code=error.status_code,
            )
        if isinstance(error, sdk_models.MistralError):
            return self._error_from_answer(operation=operation, status_code=error.status_code, body=error.body,
                                           headers=error.headers, model=model, refusal_is_expected=refusal_is_expected)
        if isinstance(error, sdk_models.NoResponseError):
            return self._unreachable(operation, error)
        return super()._provider_error(error, operation=operation, model=model, refusal_is_expected=refusal_is_expected)


def _set(value: Any) -> Any:
    """The SDK marks absent optional fields with UNSET; Genesis wants None."""
    return None if isinstance(value, Unset) else value


def _timestamp(value: Any) -> datetime:
    return datetime.fromtimestamp(int(_set(value) or 0), tz=UTC)


def _content_text(content: Any) -> str:
    content = _set(content)
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(getattr(chunk, "text", "") or "") for chunk in content)


def _model_info(card: Any) -> ModelInfo:
    fine_tuned = getattr(card, "type", "base") == "fine-tuned"
    capabilities = getattr(card, "capabilities", None)
    return ModelInfo(
        id=card.id,
        fine_tuned=fine_tuned,
        base_model=getattr(card, "root", None) if fine_tuned else card.id,
        job_id=getattr(card, "job", None) if fine_tuned else None,
        fine_tunable=bool(capabilities and capabilities.fine_tuning),
    )


def _uploaded_file(stored: Any) -> UploadedFile:
    return UploadedFile(
        id=stored.id,
        filename=stored.filename,
        purpose=str(stored.purpose),
        size_bytes=int(stored.size_bytes),
        num_lines=_set(stored.num_lines),
        created_at=_timestamp(stored.created_at),
    )


def _job_snapshot(job: Any) -> FineTuningJobSnapshot:
    metadata = _set(job.metadata)
    cost = _set(metadata.cost) if metadata is not None else None
    hyperparameters = job.hyperparameters.model_dump(mode="json", by_alias=True) if job.hyperparameters else {}
    return FineTuningJobSnapshot(
        id=job.id,
        status=str(job.status),
        base_model=job.model,
        fine_tuned_model=_set(job.fine_tuned_model),
        training_file_ids=list(job.training_files or []),
        validation_file_ids=list(_set(job.validation_files) or []),
        hyperparameters={key: value for key, value in hyperparameters.items() if value is not None},
        suffix=_set(job.suffix),
        auto_start=bool(job.auto_start),
        trained_tokens=_set(job.trained_tokens),
        cost=None if cost is None else Decimal(str(cost)),
        cost_currency=_set(metadata.cost_currency) if metadata is not None else None,
        expected_duration_seconds=_set(metadata.expected_duration_seconds) if metadata is not None else None,
        created_at=_timestamp(job.created_at),
        modified_at=_timestamp(job.modified_at),
        events=[
            JobEvent(name=event.name, created_at=_timestamp(event.created_at), data=dict(_set(event.data) or {}))
            for event in getattr(job, "events", None) or []
        ],
        checkpoints=[
            JobCheckpoint(
                step_number=checkpoint.step_number,
                created_at=_timestamp(checkpoint.created_at),
                metrics={
                    "train_loss": _set(checkpoint.metrics.train_loss),
                    "valid_loss": _set(checkpoint.metrics.valid_loss),
                    "valid_mean_token_accuracy": _set(checkpoint.metrics.valid_mean_token_accuracy),
                },
            )
            for checkpoint in getattr(job, "checkpoints", None) or []
        ],
        raw=job.model_dump(mode="json", by_alias=True),
    )
