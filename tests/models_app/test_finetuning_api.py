"""GET /api/v1/fine-tuning/jobs[/{id}]: read-only, limited to the agents the key may act for."""

from __future__ import annotations

import pytest

from models_app.finetuning.services import finetuning_job_create
from models_app.finetuning.training_files import training_file_upload
from models_app.registry.services import agent_upsert
from tests.models_app.finetuning_fixtures import *  # noqa: F403 - fixtures
from tests.models_app.finetuning_fixtures import DEMO_TRAINING_FILE


@pytest.fixture
def job(ft_world):
    with DEMO_TRAINING_FILE.open("rb") as stream:
        training_file = training_file_upload(agent=ft_world.agent, content=stream, filename=DEMO_TRAINING_FILE.name)
    return finetuning_job_create(agent=ft_world.agent, training_file=training_file, hyperparameters={"epochs": 1})


def get(client, url: str, key: str):
    return client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}")


def test_a_key_lists_and_reads_its_agents_jobs(client, api_key_for, job) -> None:
    key = api_key_for("support_agent")
    listing = get(client, "/api/v1/fine-tuning/jobs?agent=support_agent", key)
    assert listing.status_code == 200
    [item] = listing.json()
    assert (item["id"], item["agent"], item["status"], item["provider_job_id"]) == (job.pk, "support_agent", "QUEUED", job.provider_job_id)
    assert item["estimated_cost_usd"] == "4.000000" and item["cost_usd"] == "4.000000"  # money as decimal strings
    one = get(client, f"/api/v1/fine-tuning/jobs/{job.pk}", key)
    assert one.status_code == 200 and one.json()["training_file"] == job.training_file.provider_file_id


def test_another_agents_key_sees_nothing(client, api_key_for, job) -> None:
    agent_upsert(slug="qa_agent", name="QA agent")
    key = api_key_for("qa_agent")
    assert get(client, "/api/v1/fine-tuning/jobs", key).json() == []
    assert get(client, "/api/v1/fine-tuning/jobs?agent=support_agent", key).status_code == 403
    missing = get(client, f"/api/v1/fine-tuning/jobs/{job.pk}", key)
    assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]


def test_without_a_key_it_is_401(client, job) -> None:
    assert client.get("/api/v1/fine-tuning/jobs").status_code == 401
