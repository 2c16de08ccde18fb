"""`GET /api/v1/models/{id}/lineage`: a model version's path from training data to launch, scoped to
the agents the key may act for (403 otherwise, 404 for an unknown version)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

from genesis.errors import NotFound
from genesis.validation import ObjectId
from launch.selectors import model_lineage
from models_app.registry.models import ModelVersion
from models_app.registry.services import ensure_object_access, request_principal

router = Router(tags=["launch"])


@router.get("/models/{version_id}/lineage", response=dict[str, Any],
            summary="A model version's lineage: datasets and audits, fine-tuning job, benchmark runs, experiment stages "
                    "with approvers, total cost (decimal string)")
def lineage(request: HttpRequest, version_id: ObjectId) -> dict[str, Any]:
    version = ModelVersion.objects.select_related("agent", "provider").filter(pk=version_id).first()
    if version is None:
        raise NotFound(f"model version {version_id} does not exist")
    ensure_object_access(principal=request_principal(request), owner_slug=version.agent.slug, what=f"model version {version_id}")
    return model_lineage(version=version)
