"""The admin pages of benchmarks: start a run, read its report, cancel it; import and export suites."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from models_app.benchmarks.models import BenchmarkChunk, BenchmarkRun, BenchmarkSuite
from models_app.benchmarks.runner import benchmark_chunk_execute
from models_app.benchmarks.services import benchmark_run_create
from models_app.registry.models import Agent
from tests.accessibility import accessibility_problems, parse, self_reload

pytestmark = pytest.mark.django_db


def test_start_a_run_from_the_admin(admin_client, demo_simulator):
    agent = Agent.objects.get(slug="support_agent")
    response = admin_client.post(reverse("admin:models_app_benchmarkrun_add"), {"agent": agent.pk})

    run = BenchmarkRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("admin:models_app_benchmarkrun_change", args=[run.pk])
    assert run.requested_by.username == "admin" and run.requested_via == "admin page" and run.status == "queued"
    page = admin_client.get(response.url).content.decode()
    assert "no verdict yet" in page and 'http-equiv="refresh"' in page and "Cancel the run" in page


def test_a_refused_start_shows_the_reason(admin_client, demo_simulator):
    from costs.services import budget_upsert

    budget_upsert(name="default", amount_usd="0.0001")
    agent = Agent.objects.get(slug="support_agent")
    refused = admin_client.post(reverse("admin:models_app_benchmarkrun_add"), {"agent": agent.pk})
    assert refused.status_code == 200 and "Budget &#x27;default&#x27; is at" in refused.content.decode()  # capfirst by the admin
    assert not BenchmarkRun.objects.exists()


def test_the_run_page_shows_verdict_reasons_tags_histogram_and_regressions(admin_client, demo_simulator):
    run = benchmark_run_create(agent=Agent.objects.get(slug="content_agent"))
    for chunk in BenchmarkChunk.objects.filter(run=run):
        benchmark_chunk_execute(chunk_id=chunk.pk, worker="inline@test")
    run.refresh_from_db()

    page = admin_client.get(reverse("admin:models_app_benchmarkrun_change", args=[run.pk])).content.decode()

    assert 'class="bm-verdict bm-PASS"' in page and run.comparison["reasons"][1].replace("'", "&#x27;") in page
    assert "<h2>Per tag</h2>" in page and "difficulty:hard" in page and "tagline" in page
    assert '<svg class="bm-hist"' in page and page.count('<rect class="candidate"') == 10
    assert "<h2>Worst regressions</h2>" in page and "http-equiv" not in page
    assert "cdn" not in page.lower()
    listing = admin_client.get(reverse("admin:models_app_benchmarkrun_changelist")).content.decode()
    assert "96/96 answers (100 %)" in listing and "PASS" in listing


def test_cancel_from_the_admin(admin_client, demo_simulator):
    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"))
    response = admin_client.post(reverse("admin:models_app_benchmarkrun_cancel", args=[run.pk]), {"reason": "typo in suite"})
    run.refresh_from_db()
    assert response.status_code == 302 and run.status == "cancelled" and "typo in suite" in run.error


def test_import_a_suite_file_and_export_it(admin_client, seeded_demo):
    agent = Agent.objects.get(slug="qa_agent")
    bad = SimpleUploadedFile("bad.jsonl", b'{"id": "a"}\nnot json\n')
    refused = admin_client.post(reverse("admin:models_app_benchmarksuite_import"), {"agent": agent.pk, "slug": "extra", "file": bad})
    page = refused.content.decode()
    assert refused.status_code == 200 and "The file was refused" in page
    assert "line 1: messages: needs a non-empty list" in page and "line 2: not valid JSON" in page

    case = {"id": "x1", "messages": [{"role": "user", "content": "2+2?"}], "reference": 4, "scorer": {"name": "numeric"}}
    good = SimpleUploadedFile("good.jsonl", (json.dumps(case) + "\n").encode())
    imported = admin_client.post(reverse("admin:models_app_benchmarksuite_import"), {"agent": agent.pk, "slug": "extra", "file": good})
    suite = BenchmarkSuite.objects.get(slug="extra")
    assert imported.status_code == 302 and suite.case_count == 1 and suite.created_by.username == "admin"

    exported = admin_client.get(reverse("admin:models_app_benchmarksuite_export", args=[suite.pk]))
    assert exported["Content-Disposition"] == 'attachment; filename="qa_agent-extra-v1.jsonl"'
    assert json.loads(exported.content.decode().splitlines()[0])["id"] == "x1"
    assert admin_client.get(reverse("admin:models_app_benchmarksuite_change", args=[suite.pk])).status_code == 200


def test_the_override_button_is_offered_only_with_the_right_to_change_model_versions_too(client, seeded_demo, simulator_factory):
    from django.contrib.auth.models import Permission

    from models_app.benchmarks.models import BenchmarkVerdictOverride
    from models_app.registry.models import ModelVersion
    from tests.factories import UserFactory
    from tests.models_app.conftest import point_demo_provider_at

    point_demo_provider_at(simulator_factory(quality={"ft:*": 0.0, "*": 1.0}), rate_limit_per_minute=60_000)
    run = benchmark_run_create(agent=Agent.objects.get(slug="legal_agent"))
    for chunk in BenchmarkChunk.objects.filter(run=run):
        benchmark_chunk_execute(chunk_id=chunk.pk, worker="inline@test")
    run.refresh_from_db()
    assert run.verdict == "FAIL"
    reviewer = UserFactory(username="reviewer")
    reviewer.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="models_app", codename__in=["view_benchmarkrun", "override_benchmark_verdict"]))
    client.force_login(reviewer)
    page_url = reverse("admin:models_app_benchmarkrun_change", args=[run.pk])

    assert "Override the verdict" not in client.get(page_url).content.decode()
    refused = client.post(reverse("admin:models_app_benchmarkrun_override", args=[run.pk]), {"reason": "legal says yes"}, follow=True)
    assert "models_app.change_modelversion" in refused.content.decode() and not BenchmarkVerdictOverride.objects.exists()

    reviewer.user_permissions.add(Permission.objects.get(content_type__app_label="models_app", codename="change_modelversion"))
    assert "Override the verdict" in client.get(page_url).content.decode()
    client.post(reverse("admin:models_app_benchmarkrun_override", args=[run.pk]), {"reason": "legal says yes"})
    assert ModelVersion.objects.get(pk=run.candidate_id).status == "approved_for_rollout"
    assert BenchmarkVerdictOverride.objects.get().actor == reviewer


def test_the_run_page_gives_the_histogram_as_text_and_names_every_field(admin_client, demo_simulator):
    """The histogram is an image named by its <title> with its counts in a table, the override reason
    has a label, headers are scoped, the verdict is a word in colours that keep their contrast."""
    run = benchmark_run_create(agent=Agent.objects.get(slug="content_agent"))
    for chunk in BenchmarkChunk.objects.filter(run=run):
        benchmark_chunk_execute(chunk_id=chunk.pk, worker="inline@test")
    run.refresh_from_db()

    html = admin_client.get(reverse("admin:models_app_benchmarkrun_change", args=[run.pk])).content.decode()

    assert accessibility_problems(html) == []
    table = next(node for node in parse(html).iter() if node.attrs.get("id") == "bm-hist-table")
    counts = [[cell.all_text() for cell in row.children] for row in table.iter() if row.tag == "tr"][1:]
    assert [row[0] for row in counts] == [f"{i / 10:.1f}–{(i + 1) / 10:.1f}" for i in range(10)]
    assert sum(int(row[2]) for row in counts) == 48  # every case of the suite, candidate side


def test_stopping_the_reloads_holds_on_another_running_page(admin_client, demo_simulator, reload_clock):
    """Stopped on a dataset being audited, a running benchmark's page does not reload either; its stop
    button comes right after the title, before the summary, and turning it back on holds everywhere too."""
    from audits.services import dataset_upload

    agent = Agent.objects.get(slug="support_agent")
    run_url = admin_client.post(reverse("admin:models_app_benchmarkrun_add"), {"agent": agent.pk}).url
    dataset = dataset_upload(content=SimpleUploadedFile("a.jsonl", b'{"messages": []}\n'), original_name="a.jsonl",
                             actor=BenchmarkRun.objects.get().requested_by)
    dataset_url = reverse("admin:audits_dataset_change", args=[dataset.pk])
    run_page = admin_client.get(run_url).content.decode()
    assert self_reload(run_page) == (20, "")  # reached by a link: 20 s to the first reload
    reload_clock.advance(20.4)
    assert self_reload(admin_client.get(run_url).content.decode()) == (3, "")  # its reload, of the same address
    assert run_page.index("<h1>") < run_page.index('id="stop-refresh"') < run_page.index("<h2>Summary</h2>")

    admin_client.post(reverse("auto_refresh"), {"refresh": "off", "next": dataset_url})
    run_page = admin_client.get(run_url).content.decode()
    assert 'http-equiv="refresh"' not in run_page and 'id="start-refresh">reload every 3 s</button>' in run_page

    admin_client.post(reverse("auto_refresh"), {"refresh": "on", "next": run_url})
    assert 'http-equiv="refresh"' in admin_client.get(dataset_url).content.decode()


@pytest.mark.parametrize("next_url", ["https://elsewhere.example/", "//elsewhere.example/admin/"])
def test_the_reload_switch_goes_back_to_this_site_only(admin_client, next_url):
    response = admin_client.post(reverse("auto_refresh"), {"refresh": "off", "next": next_url})
    assert response.status_code == 302 and response.url == reverse("admin:index")
    assert admin_client.post(reverse("auto_refresh"), {"refresh": "maybe"}).status_code == 400
    assert admin_client.get(reverse("auto_refresh"), {"refresh": "off"}).status_code == 405
