"""The base models the simulator serves, and what fine-tuning them costs.

Training prices are the simulator's own (USD per million training tokens), shaped like Mistral's
published ones but not a quote of them; every job also pays at least MINIMUM_JOB_FEE_USD.
"""

from __future__ import annotations

from dataclasses import dataclass

MINIMUM_JOB_FEE_USD = 4.0
CREATED_AT = 1_718_000_000  # fixed "created" timestamp of the base models, so listings are deterministic


@dataclass(frozen=True)
class BaseModel:
    id: str
    name: str
    description: str
    max_context_length: int
    function_calling: bool
    fine_tunable: bool
    training_usd_per_million_tokens: float | None  # None: not fine-tunable
    fim: bool = False


BASE_MODELS: tuple[BaseModel, ...] = (
    BaseModel("open-mistral-7b", "Mistral 7B", "Small open model, cheap to fine-tune.", 32_768, False, True, 1.0),
    BaseModel("open-mistral-nemo", "Mistral NeMo", "12B open model, 128k context.", 131_072, True, True, 1.0),
    BaseModel("ministral-8b-latest", "Ministral 8B", "Edge model.", 131_072, True, True, 1.0),
    BaseModel("mistral-small-latest", "Mistral Small", "Efficient general model.", 32_768, True, True, 3.0),
    BaseModel("codestral-latest", "Codestral", "Code model.", 32_768, True, True, 3.0, fim=True),
    BaseModel("mistral-medium-latest", "Mistral Medium", "General model.", 131_072, True, False, None),
    BaseModel("mistral-large-latest", "Mistral Large", "Flagship model.", 131_072, True, True, 9.0),
)
BASE_MODELS_BY_ID: dict[str, BaseModel] = {model.id: model for model in BASE_MODELS}


def base_model_of(model_id: str) -> str:
    """`ft:open-mistral-7b:…` -> `open-mistral-7b`; a base model id is its own base."""
    if model_id.startswith("ft:"):
        parts = model_id.split(":")
        return parts[1] if len(parts) > 1 else ""
    return model_id


def is_servable(model_id: str) -> bool:
    """A base model, or any well-formed `ft:<base>:…` name over a known base.

    Fine-tuned names are accepted without a matching job on purpose: the simulator keeps jobs in
    memory, and a model registered in Genesis (or seeded by `seed_demo`) must keep answering after
    the simulator restarts.
    """
    if model_id in BASE_MODELS_BY_ID:
        return True
    parts = model_id.split(":")
    return model_id.startswith("ft:") and len(parts) >= 3 and parts[1] in BASE_MODELS_BY_ID and all(parts[2:])


def training_cost_usd(*, base_model_id: str, train_tokens: int) -> float:
    price = BASE_MODELS_BY_ID[base_model_id].training_usd_per_million_tokens or 0.0
    return round(max(MINIMUM_JOB_FEE_USD, train_tokens / 1_000_000 * price), 2)


def capabilities(model: BaseModel, *, fine_tuned: bool) -> dict[str, bool]:
    return {
        "completion_chat": True,
        "completion_fim": model.fim,
        "function_calling": model.function_calling,
        "fine_tuning": model.fine_tunable and not fine_tuned,
        "vision": False,
        "classification": False,
    }


def base_model_card(model: BaseModel) -> dict:
    return {
        "id": model.id,
        "object": "model",
        "created": CREATED_AT,
        "owned_by": "mistralai",
        "name": model.name,
        "description": model.description,
        "max_context_length": model.max_context_length,
        "aliases": [],
        "capabilities": capabilities(model, fine_tuned=False),
        "type": "base",
    }


def fine_tuned_model_card(*, model_id: str, job_id: str, created: int) -> dict:
    base = BASE_MODELS_BY_ID[base_model_of(model_id)]
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "genesis-simulator",
        "name": None,
        "description": f"Fine-tuned from {base.id} by job {job_id}.",
        "max_context_length": base.max_context_length,
        "aliases": [],
        "capabilities": capabilities(base, fine_tuned=True),
        "job": job_id,
        "root": base.id,
        "archived": False,
        "type": "fine-tuned",
    }
