"""`manage.py fine_tune` from a terminal (in-process through call_command, and one real subprocess
for the exit status): upload, create, start, sync, cancel, status, and the exit codes 0 / 1 / 2."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from costs.services import budget_upsert, cost_record
from models_app.finetuning.models import FineTuningJob, TrainingFile
from tests.conftest import ROOT, child_environment
from tests.models_app.finetuning_fixtures import *  # noqa: F403 - fixtures
from tests.models_app.finetuning_fixtures import DEMO_TRAINING_FILE, chat_lines, wait_until


def fine_tune(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("fine_tune", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_demo_flow_from_a_terminal(ft_world) -> None:
    out, _ = fine_tune("upload", "--agent", "support_agent", str(DEMO_TRAINING_FILE), "--json")
    uploaded = json.loads(out)
    assert (uploaded["lines"], uploaded["purpose"]) == (50, "training")

    out, _ = fine_tune("create", "--agent", "support_agent", "--training-file", uploaded["provider_file_id"],
                       "--epochs", "3", "--json")
    created = json.loads(out)
    assert created["status"] == "QUEUED" and created["hyperparameters"] == {"epochs": 3.0}
    assert created["estimated_cost_usd"] == "4.000000"
    job_id = str(created["id"])

    out, _ = fine_tune("start", job_id)
    assert f"job #{job_id} support_agent open-mistral-7b RUNNING" in out
    wait_until(lambda: ft_world.simulator.state.get_job(created["provider_job_id"]).status(time.time()) == "SUCCESS",
               timeout=10, what="the simulated job to finish")
    out, _ = fine_tune("sync", created["provider_job_id"], "--json")  # the provider's id works too
    synced = json.loads(out)
    assert synced["status"] == "SUCCESS" and synced["model_version_id"] and synced["cost_recorded"] is True
    assert synced["cost_usd"] == "4.000000"

    out, _ = fine_tune("status", "--agent", "support_agent", "--json")
    assert [job["id"] for job in json.loads(out)] == [int(job_id)]
    out, _ = fine_tune("status", "--provider", "sim-ft")
    assert f"{created['provider_job_id']} open-mistral-7b SUCCESS — job #{job_id} (support_agent)" in out


def test_create_can_upload_and_cancel_a_job(ft_world) -> None:
    out, _ = fine_tune("create", "--agent", "support_agent", "--training", str(DEMO_TRAINING_FILE), "--training-steps", "2")
    job = FineTuningJob.objects.get()
    assert job.hyperparameters == {"training_steps": 2} and "QUEUED" in out
    # Queued: what the provider says it will cost is its estimate, not a cost, and is written as money.
    assert "cost ≈$4.00 (the provider's estimate until the job ends)" in out and "4.000000" not in out
    out, _ = fine_tune("cancel", str(job.pk), "--reason", "wrong base model")
    assert "CANCELLATION_REQUESTED" in out
    assert job.history.first().history_change_reason.startswith("cancelled: wrong base model")


def test_an_invalid_file_prints_each_line_and_exits_1(ft_world) -> None:
    path = ROOT / "var" / "test_finetuning_broken.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(chat_lines(2) + b"{oops\n")
    try:
        with pytest.raises(CommandError) as refused:
            fine_tune("upload", "--agent", "support_agent", str(path))
    finally:
        path.unlink()
    assert refused.value.returncode == 1
    assert "1 of 3 lines is not a valid fine-tuning sample" in str(refused.value)
    assert str(refused.value).endswith("Fix them and upload again (manage.py audit_dataset FILE lists every problem, with PII and duplicates)")
    assert not TrainingFile.objects.exists()


def test_a_budget_refusal_exits_1_with_the_reason(ft_world) -> None:
    budget_upsert(name="support", amount_usd="5", agent=ft_world.agent, hard_limit=True)
    cost_record(agent=ft_world.agent, operation="manual", amount_usd="3", idempotency_key="test:spent")
    with pytest.raises(CommandError) as refused:
        fine_tune("create", "--agent", "support_agent", "--training", str(DEMO_TRAINING_FILE))
    assert refused.value.returncode == 1 and "support" in str(refused.value)
    assert not FineTuningJob.objects.exists()


@pytest.mark.parametrize(
    "arguments",
    [
        ("upload", "--agent", "nobody", "x.jsonl"),
        ("upload", "--agent", "support_agent", "/nonexistent/train.jsonl"),
        ("start", "999999"),
        ("status", "--agent", "support_agent", "--as", "ghost"),
        ("create", "--agent", "support_agent", "--training-file", "file-that-does-not-exist"),
    ],
)
def test_usage_errors_exit_2(ft_world, arguments: tuple[str, ...]) -> None:
    with pytest.raises(CommandError) as refused:
        fine_tune(*arguments)
    assert refused.value.returncode == 2


def test_values_the_service_refuses_as_invalid_are_usage_errors(ft_world) -> None:
    # Parsed fine by argparse, refused by the service as invalid input (HTTP 422): the contract's exit 2.
    with pytest.raises(CommandError) as refused:
        fine_tune("create", "--agent", "support_agent", "--training", str(DEMO_TRAINING_FILE), "--epochs", "-1")
    assert refused.value.returncode == 2 and "hyperparameters: " in str(refused.value)
    assert not FineTuningJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_terminal_gets_exit_status_2_for_bad_options(ft_world) -> None:
    finished = subprocess.run(
        [sys.executable, "manage.py", "fine_tune", "create", "--agent", "support_agent", "--epochs", "1",
         "--training-steps", "3", "--training-file", "1"],
        cwd=ROOT, env=child_environment(), capture_output=True, text=True, timeout=60,
    )
    assert finished.returncode == 2, finished.stderr
    assert "not allowed with argument" in finished.stderr


def test_adopt_links_a_lost_creation_to_the_providers_job(ft_world) -> None:
    from models_app.registry.gateway import provider_for

    out, _ = fine_tune("upload", "--agent", "support_agent", str(DEMO_TRAINING_FILE), "--json")
    provider_file_id = json.loads(out)["provider_file_id"]
    ft_world.simulator.state.queue_faults(500)
    with pytest.raises(CommandError):
        fine_tune("create", "--agent", "support_agent", "--training-file", provider_file_id)
    job = FineTuningJob.objects.get()
    assert job.status == "NOT_CREATED" and f"fine_tune adopt {job.pk} <provider job id>" in job.last_error
    orphan = provider_for(ft_world.provider).create_job(base_model=job.base_model, training_file_ids=[provider_file_id]).id

    out, _ = fine_tune("status", "--provider", "sim-ft")
    assert f"{orphan} open-mistral-7b" in out and "NOT TRACKED by Genesis" in out
    with pytest.raises(CommandError, match="has no fine-tuning job 'job-nope'") as refused:
        fine_tune("adopt", str(job.pk), "job-nope")
    assert refused.value.returncode == 1
    out, _ = fine_tune("adopt", str(job.pk), orphan, "--reason", "found it", "--json")
    adopted = json.loads(out)
    assert adopted["provider_job_id"] == orphan and adopted["status"] in ("QUEUED", "VALIDATED")
    with pytest.raises(CommandError, match=f"already tracks provider job {orphan}") as refused:
        fine_tune("adopt", str(job.pk), orphan)
    assert refused.value.returncode == 1


def test_after_a_restore_a_providers_job_on_a_file_the_database_lost_is_adopted(ft_world, tmp_path) -> None:
    """The restore drill (docs/runbooks/backup-restore.md): a job created, with its training file, after the
    backup the database was restored from is at the provider and in no row. Uploading the bytes again gives
    another provider file, so the job could not be adopted; `upload --provider-file-id` records the file the
    provider holds, and the job is adopted on it — registered and charged once."""
    from costs.models import CostEntry
    from models_app.registry.gateway import provider_for

    client = provider_for(ft_world.provider)  # what the Genesis after the backup did
    lost_file = client.upload_file(filename=DEMO_TRAINING_FILE.name, content=DEMO_TRAINING_FILE.read_bytes()).id
    orphan = client.create_job(base_model=ft_world.baseline.base_model, training_file_ids=[lost_file], auto_start=True).id
    wait_until(lambda: ft_world.simulator.state.get_job(orphan).status(time.time()) == "SUCCESS",
               timeout=10, what="the simulated job to finish")
    other_bytes = tmp_path / "other.jsonl"
    other_bytes.write_bytes(chat_lines(5))
    with pytest.raises(CommandError, match=f"provider file {lost_file} .* does not hold the bytes of other.jsonl") as refused:
        fine_tune("upload", "--agent", "support_agent", str(other_bytes), "--provider-file-id", lost_file)
    assert refused.value.returncode == 1
    with pytest.raises(CommandError, match="has no file 'file-nope'"):
        fine_tune("upload", "--agent", "support_agent", str(DEMO_TRAINING_FILE), "--provider-file-id", "file-nope")
    assert not TrainingFile.objects.exists()

    requests_before = len(ft_world.requests("/v1/files"))
    out, _ = fine_tune("upload", "--agent", "support_agent", str(DEMO_TRAINING_FILE), "--provider-file-id", lost_file)
    assert out.startswith(f"recorded {DEMO_TRAINING_FILE.name} for support_agent: 50 samples") and lost_file in out
    # Nothing uploaded: the file looked up, then its content downloaded (the SDK's files.download) and compared.
    assert ft_world.requests("/v1/files")[requests_before:] == [
        ("GET", f"/v1/files/{lost_file}", 200), ("GET", f"/v1/files/{lost_file}/content", 200)]
    assert TrainingFile.objects.get().sha256 == hashlib.sha256(DEMO_TRAINING_FILE.read_bytes()).hexdigest()
    fine_tune("create", "--agent", "support_agent", "--training-file", lost_file, "--no-submit")
    job = FineTuningJob.objects.get()
    out, _ = fine_tune("adopt", str(job.pk), orphan, "--reason", "restored from a backup taken before it", "--json")
    adopted = json.loads(out)
    assert adopted["status"] == "SUCCESS" and adopted["model_version_id"] and adopted["cost_recorded"] is True
    assert list(CostEntry.objects.filter(operation="fine_tuning").values_list("idempotency_key", flat=True)) == [f"finetune:{job.pk}"]


def _refused_recording(path, provider_file_id: str) -> str:
    """What `fine_tune upload PATH --provider-file-id ID` says when it refuses (exit 1, nothing recorded)."""
    with pytest.raises(CommandError) as refused:
        fine_tune("upload", "--agent", "support_agent", str(path), "--provider-file-id", provider_file_id)
    assert refused.value.returncode == 1
    assert not TrainingFile.objects.exists()
    return str(refused.value)


def _same_size_line(text: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok."}]}) + "\n"


def test_a_provider_file_of_other_bytes_with_the_same_size_and_lines_is_not_recorded(ft_world, tmp_path) -> None:
    """The second reviewer's case: a clean file of the same size and line count as the provider's file, which
    holds e-mail addresses no audit read. Size and lines agree; the content, downloaded, does not."""
    from models_app.registry.gateway import provider_for

    clean = "".join(_same_size_line(f"question number {n:02d} about the plan??") for n in range(10)).encode()
    with_pii = "".join(_same_size_line(f"mail me at bob{n:02d}@example.com plz!!!") for n in range(10)).encode()
    assert len(clean) == len(with_pii) and clean != with_pii
    lost_file = provider_for(ft_world.provider).upload_file(filename="x.jsonl", content=with_pii).id
    path = tmp_path / "clean.jsonl"
    path.write_bytes(clean)
    assert _refused_recording(path, lost_file) == (
        f"provider file {lost_file} holds other bytes than clean.jsonl: sha256 {hashlib.sha256(with_pii).hexdigest()[:12]}… "
        f"at provider 'sim-ft', {hashlib.sha256(clean).hexdigest()[:12]}… in clean.jsonl (same size and line count). "
        "The audit of clean.jsonl does not describe that file, so it is not recorded; give the file it was uploaded "
        "from, or upload clean.jsonl without naming a provider file and train on that")
    assert ("GET", f"/v1/files/{lost_file}/content", 200) in ft_world.requests("/v1/files")


def _provider_holding(ft_world, scripted_provider, content: bytes, *, content_answer: tuple[int, Any]) -> str:
    """A provider (scripted) that holds `content` under a file id, as the simulator described it, and answers
    that file's content route with `content_answer`; the account points at it. Returns the file id."""
    from models_app.registry.gateway import provider_for
    from models_app.registry.services import provider_account_upsert

    file_id = provider_for(ft_world.provider).upload_file(filename="lost.jsonl", content=content).id
    card = ft_world.simulator.state.get_file(file_id).card(retrieved=True)
    scripted_provider.answer = lambda method, path: (
        content_answer if path == f"/v1/files/{file_id}/content" else (200, card) if path == f"/v1/files/{file_id}"
        else (404, {"detail": "Not Found"}))
    provider_account_upsert(name=ft_world.provider.name, kind="simulator", base_url=scripted_provider.url,
                            api_key_env="GENESIS_SIMULATOR_API_KEY")
    return file_id


@pytest.mark.parametrize("status", [404, 405, 501])
def test_a_provider_that_does_not_serve_a_files_content_is_refused_with_what_to_do(
    ft_world, scripted_provider, tmp_path, status: int
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(chat_lines(8))
    lost_file = _provider_holding(ft_world, scripted_provider, path.read_bytes(), content_answer=(status, {"detail": "Not Found"}))
    assert _refused_recording(path, lost_file) == (
        f"provider 'sim-ft' does not serve the content of file {lost_file} (GET {scripted_provider.url}/v1/files/"
        f"{lost_file}/content answered {status}: {{\"detail\": \"Not Found\"}}), so Genesis cannot check that it holds "
        "the bytes of train.jsonl, and records nothing unverified. Upload train.jsonl without naming a provider file "
        f"and train again on that upload, or ask the provider for the content of file {lost_file} and compare it with "
        "train.jsonl")


def test_a_providers_content_larger_than_the_file_is_read_no_further_than_its_size_and_a_little(
    ft_world, scripted_provider, tmp_path
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(chat_lines(8))
    size = len(path.read_bytes())
    lost_file = _provider_holding(ft_world, scripted_provider, path.read_bytes(), content_answer=(200, "x" * 100_000))
    assert _refused_recording(path, lost_file) == (
        f"provider file {lost_file} holds other bytes than train.jsonl: its content is more than {size + 1024} bytes, "
        f"train.jsonl has {size}; give the file it was uploaded from")


def test_a_files_content_under_a_content_type_the_sdk_does_not_take_is_refused_without_quoting_it(
    ft_world, scripted_provider, tmp_path
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(chat_lines(8))
    lost_file = _provider_holding(ft_world, scripted_provider, path.read_bytes(), content_answer=(200, "secret text"))
    assert _refused_recording(path, lost_file) == (
        f"could not download file {lost_file} from provider 'sim-ft': provider 'sim-ft' answered download file "
        f"{lost_file} with a Content-Type the SDK does not accept (application/json, 200)")


def test_a_provider_file_another_training_file_records_is_named_as_that_rows(ft_world) -> None:
    out, _ = fine_tune("upload", "--agent", "support_agent", str(DEMO_TRAINING_FILE), "--json")
    recorded = TrainingFile.objects.get()
    provider_file_id = json.loads(out)["provider_file_id"]
    with pytest.raises(CommandError) as refused:
        fine_tune("upload", "--agent", "support_agent", "--purpose", "validation", str(DEMO_TRAINING_FILE),
                  "--provider-file-id", provider_file_id)
    assert refused.value.returncode == 1
    assert str(refused.value) == (
        f"{DEMO_TRAINING_FILE.name} (support_agent, validation): training file #{recorded.pk} ({DEMO_TRAINING_FILE.name}, "
        f"support_agent, training) already records provider file {provider_file_id}, and a provider file is recorded "
        f"once. Nothing was recorded: train on that training file, or upload {DEMO_TRAINING_FILE.name} without naming "
        "a provider file for support_agent (validation)")
    assert "lost its earlier files" not in str(refused.value)
    assert list(TrainingFile.objects.all()) == [recorded]


def test_create_audits_a_raw_file_refuses_pii_and_warns_of_a_skew(ft_world, tmp_path) -> None:
    path = ROOT / "var" / "test_finetuning_pii.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": f"Call me on +44 20 7946 09{n:02d}"},
                                 {"role": "assistant", "content": "Noted."}]}) + "\n"
        for n in range(10)
    ))
    try:
        with pytest.raises(CommandError) as refused:
            fine_tune("create", "--agent", "support_agent", "--training", str(path))
    finally:
        path.unlink()
    assert refused.value.returncode == 1
    assert "found 10 PII occurrences (phone 10)" in str(refused.value) and "--scrub" in str(refused.value)
    assert not FineTuningJob.objects.exists() and not TrainingFile.objects.exists()

    skewed = tmp_path / "test_finetuning_skew.jsonl"
    skewed.write_bytes(chat_lines(10, prefix="how do I pay"))
    out, err = fine_tune("create", "--agent", "support_agent", "--training", str(skewed))
    assert "QUEUED" in out
    assert "warning: test_finetuning_skew.jsonl: its audit (dataset #" in err
    assert "difficulty skewed: 100% of the examples are easy" in err

    # The demo file holds the default easy / medium / hard mix: a demo fine-tune shows no warning to ignore.
    out, err = fine_tune("create", "--agent", "support_agent", "--training", str(DEMO_TRAINING_FILE))
    assert "QUEUED" in out
    assert "warning" not in err


def test_an_agent_on_an_account_that_cannot_fine_tune_is_refused_with_exit_1(ft_world) -> None:
    from models_app.registry.services import agent_upsert, model_version_register, provider_account_upsert

    vllm = provider_account_upsert(name="vllm", kind="openai_compatible", base_url="http://127.0.0.1:9/v1", api_key_env="")
    agent = agent_upsert(slug="qa_agent", name="QA agent")
    model_version_register(agent=agent, provider=vllm, model_id="llama3", base_model="llama3", kind="baseline")
    with pytest.raises(CommandError) as refused:
        fine_tune("create", "--agent", "qa_agent", "--training", str(DEMO_TRAINING_FILE))
    assert refused.value.returncode == 1  # a refusal, not a usage error
    assert str(refused.value) == ("provider account 'vllm' is OpenAI-compatible server (vLLM, Ollama, llama.cpp, Together), "
                                  "which cannot fine-tune; use a Mistral or simulator account")


def test_a_provider_refusing_a_job_on_sync_exits_1_and_shows_no_estimate(ft_world, scripted_provider) -> None:
    from models_app.registry.services import provider_account_upsert

    out, _ = fine_tune("create", "--agent", "support_agent", "--training", str(DEMO_TRAINING_FILE))
    assert "cost ≈$4.00" in out
    job = FineTuningJob.objects.get()
    scripted_provider.answer = lambda method, path: (501, {"detail": "Not Implemented"})
    provider_account_upsert(name="sim-ft", kind="simulator", base_url=scripted_provider.url, api_key_env="GENESIS_SIMULATOR_API_KEY")
    out = io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("fine_tune", "sync", str(job.pk), stdout=out)
    assert refused.value.returncode == 1
    shown = out.getvalue()
    assert f"job #{job.pk} support_agent open-mistral-7b REFUSED ({job.provider_job_id}) cost — (refused by the provider, not charged)" in shown
    assert "≈" not in shown  # it will never be charged: no estimate
    assert 'provider\'s answer (HTTP 501): {"detail": "Not Implemented"}' in shown
