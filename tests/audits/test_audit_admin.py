"""The admin's dataset pages: upload through the form (the service stores it and queues the audit),
the dataset page with the audit summary, PII per type with masked samples and line numbers, format
errors, duplicate groups and the difficulty chart — and never a raw PII value —, the buttons that
call the services, downloads, and read-only lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from audits import services
from audits.models import AuditRun, AuditStatus, Dataset, DatasetOrigin, DatasetStatus
from audits.pii import PII_TYPES
from genesis.auto_refresh import RELOAD_LATE_SECONDS
from tests.accessibility import accessibility_problems, parse, self_reload
from tests.audits.samples import PLANTED, chat_line, sentence_with
from tests.audits.test_models_services import mixed_lines
from tests.factories import AgentFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def admin_client(client):
    user = UserFactory(username="root", is_superuser=True)
    client.force_login(user)
    client.user = user
    return client


def planted_body() -> bytes:
    lines = [chat_line(sentence_with(value)) for values in PLANTED.values() for value in values]
    lines += [chat_line("How are you today?", "Fine, thanks.")] * 2
    lines.append('{"messages": [{"role": "bot", "content": "hi"}]}')
    return ("\n".join(lines) + "\n").encode()


def audited(dataset: Dataset) -> AuditRun:
    dataset.refresh_from_db()
    return services.audit_run_execute(run_id=dataset.latest_audit_id)


def test_upload_form_stores_the_file_and_shows_the_audit_without_raw_pii(admin_client, media_root):
    agent = AgentFactory(slug="support_agent")
    body = planted_body()
    response = admin_client.post("/admin/audits/dataset/add/", {
        "file": SimpleUploadedFile("customers.jsonl", body), "agent": agent.pk, "purpose": "training", "near_threshold": "0.8",
    })
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/audits/dataset/{dataset.pk}/change/"
    assert (dataset.uploaded_by, dataset.via, dataset.agent, dataset.original_name) == (admin_client.user, "admin", agent, "customers.jsonl")
    assert (media_root / dataset.file.name).read_bytes() == body

    queued = admin_client.get(f"/admin/audits/dataset/{dataset.pk}/change/").content.decode()
    # The message names the file as it is called: Django's admin would capitalise it ("Customers.jsonl").
    assert f'<li class="success">customers.jsonl stored as dataset #{dataset.pk}; its audit is queued</li>' in queued
    assert 'data-status="queued"' in queued and 'id="audit-progress"' in queued
    # The page follows the audit by itself, the first time after 20 s (time to reach the stop button).
    assert self_reload(queued) == (20, "")

    run = audited(dataset)
    page = admin_client.get(f"/admin/audits/dataset/{dataset.pk}/change/").content.decode()
    assert 'http-equiv="refresh"' not in page
    planted = sum(len(values) for values in PLANTED.values())
    assert f'data-testid="pii-total">{planted}<' in page
    for pii_type in PII_TYPES:
        row = re.search(rf'<tr data-pii-type="{pii_type}">(.*?)</tr>', page, re.S).group(1)
        assert f'<td class="count">{len(PLANTED[pii_type])}</td>' in row
    email_row = re.search(r'<tr data-pii-type="email">(.*?)</tr>', page, re.S).group(1)
    assert "1, 2, 3, 4" in email_row and '<span class="masked">j***@e***.com</span> (line 1)' in email_row
    # The line has its own column: the problem is not prefixed with "line N:" again.
    assert f"<td>{planted + 3}</td><td>messages[0].role is a 3-character string, not one of" in page
    assert "1 line repeats an earlier line exactly, 0 nearly" in page
    assert f'<tr class="duplicate-group" data-kind="exact"><td>exact</td><td>{planted + 1}, {planted + 2}</td></tr>' in page
    assert page.count('class="difficulty-bar"') == 3 and 'data-level="easy" data-fraction="1.0"' in page
    for values in PLANTED.values():
        for value in values:
            assert value not in page, value
            # HTML-escaped forms too ("O'Neil" becomes "O&#x27;Neil").
            assert value.replace("'", "&#x27;").replace("&", "&amp;") not in page, value
    assert run.status == AuditStatus.SUCCEEDED


def test_buttons_call_the_services(admin_client, media_root):
    dataset = services.dataset_upload(content=SimpleUploadedFile("t.jsonl", planted_body()), original_name="t.jsonl")
    page = admin_client.get(f"/admin/audits/dataset/{dataset.pk}/change/").content.decode()
    for action in ("audit", "scrub-placeholder", "scrub-pseudonym", "rebalance"):
        assert f'data-action="{action}"' in page

    refused = admin_client.post(f"/admin/audits/dataset/{dataset.pk}/audit/", follow=True)
    assert "is still queued" in refused.content.decode() and AuditRun.objects.count() == 1
    audited(dataset)
    AuditRun.objects.filter(dataset=dataset).update(near_threshold=0.65)
    assert admin_client.post(f"/admin/audits/dataset/{dataset.pk}/audit/").status_code == 302
    again = AuditRun.objects.get(dataset=dataset, requested_by=admin_client.user, via="admin: audit again")
    assert (again.status, again.near_threshold) == (AuditStatus.QUEUED, 0.65)  # as the audit before

    response = admin_client.post(f"/admin/audits/dataset/{dataset.pk}/scrub/", {"mode": "pseudonym"})
    scrubbed = Dataset.objects.get(origin=DatasetOrigin.SCRUB)
    assert response["Location"] == f"/admin/audits/dataset/{scrubbed.pk}/change/"
    assert (scrubbed.parent, scrubbed.uploaded_by, scrubbed.parameters["mode"]) == (dataset, admin_client.user, "pseudonym")
    pending = admin_client.get(response["Location"]).content.decode()
    assert 'data-status="pending"' in pending and 'http-equiv="refresh"' in pending
    services.dataset_derive_execute(dataset_id=scrubbed.pk)
    audited(scrubbed)
    page = admin_client.get(response["Location"]).content.decode()
    assert 'data-testid="pii-total">0<' in page and f'data-testid="parent-link">#{dataset.pk} t.jsonl' in page

    bad = admin_client.post(f"/admin/audits/dataset/{dataset.pk}/rebalance/", {"mix": "90,20", "seed": "0"}, follow=True)
    assert "<li class=\"error\">mix: the mix needs three numbers" in bad.content.decode()
    assert not Dataset.objects.filter(origin=DatasetOrigin.REBALANCE).exists()
    assert admin_client.post(f"/admin/audits/dataset/{dataset.pk}/rebalance/", {"mix": "50,30,20", "seed": "4"}).status_code == 302
    rebalanced = Dataset.objects.get(origin=DatasetOrigin.REBALANCE)
    assert rebalanced.parameters["mix"] == {"easy": 0.5, "medium": 0.3, "hard": 0.2} and rebalanced.parameters["seed"] == 4
    parent_page = admin_client.get(f"/admin/audits/dataset/{dataset.pk}/change/").content.decode()
    assert parent_page.count('class="derived-row"') == 2


def test_rebalanced_page_shows_the_achieved_mix_and_the_shortfall(admin_client):
    source = SimpleUploadedFile("mix.jsonl", ("\n".join(mixed_lines(easy=20, medium=12, hard=2)) + "\n").encode())
    dataset = services.dataset_upload(content=source, original_name="mix.jsonl", audit=False)
    rebalanced = services.dataset_derive_execute(dataset_id=services.dataset_rebalance(dataset=dataset).pk)
    page = admin_client.get(f"/admin/audits/dataset/{rebalanced.pk}/change/").content.decode()
    assert f'<span data-level="hard" data-share="{rebalanced.achieved_mix["hard"]}">' in page
    assert "<li>2 hard examples: 7 more needed (target 25% of 34)</li>" in page
    assert "8 examples written; 0 duplicates and 0 invalid lines dropped" in page


def test_download_streams_the_file_and_a_pending_copy_has_none(admin_client, media_root):
    body = planted_body()
    dataset = services.dataset_upload(content=SimpleUploadedFile("d.jsonl", body), original_name="d.jsonl")
    response = admin_client.get(f"/admin/audits/dataset/{dataset.pk}/download/")
    assert response.status_code == 200 and b"".join(response.streaming_content) == body
    assert response["Content-Disposition"] == 'attachment; filename="d.jsonl"'
    pending = services.dataset_scrub(dataset=dataset)
    assert admin_client.get(f"/admin/audits/dataset/{pending.pk}/download/").status_code == 404


def test_a_viewer_reads_but_cannot_press_buttons(client):
    dataset = services.dataset_upload(content=SimpleUploadedFile("d.jsonl", planted_body()), original_name="d.jsonl")
    viewer = UserFactory(username="viewer")
    viewer.user_permissions.add(*Permission.objects.filter(content_type__app_label="audits", codename__startswith="view_"))
    client.force_login(viewer)
    page = client.get(f"/admin/audits/dataset/{dataset.pk}/change/").content.decode()
    assert "data-action=" not in page
    refused = client.post(f"/admin/audits/dataset/{dataset.pk}/scrub/", {"mode": "placeholder"}, follow=True)
    assert "User &#x27;viewer&#x27; may not scrub datasets: it needs the permission &#x27;audits.add_dataset&#x27;" in refused.content.decode()
    assert Dataset.objects.count() == 1
    assert client.get("/admin/audits/dataset/add/").status_code == 403
    assert client.post(f"/admin/audits/dataset/{dataset.pk}/delete/", {"post": "yes"}).status_code == 403
    stranger = UserFactory(username="stranger")
    client.force_login(stranger)
    assert client.get(f"/admin/audits/dataset/{dataset.pk}/change/").status_code == 403
    assert client.get(f"/admin/audits/dataset/{dataset.pk}/download/").status_code == 403


def test_lists_render_in_a_fixed_number_of_queries(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def changelist_queries() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as queries:
            page = admin_client.get("/admin/audits/dataset/").content.decode()
        return len(queries), page

    def add(index: int) -> None:
        dataset = services.dataset_upload(content=SimpleUploadedFile(f"d{index}.jsonl", planted_body()), original_name=f"d{index}.jsonl")
        if index % 2:
            audited(dataset)

    for index in range(2):
        add(index)
    few, _ = changelist_queries()
    for index in range(2, 6):
        add(index)
    many, page = changelist_queries()
    assert many == few  # rows come with their agent, uploader, parent and latest audit
    assert page.count("PII · ") == 3 and page.count("queued 0%") == 3
    runs = admin_client.get("/admin/audits/auditrun/")
    assert runs.status_code == 200 and runs.content.decode().count("?run=") == 6
    run = AuditRun.objects.filter(status=AuditStatus.SUCCEEDED).first()
    redirect = admin_client.get(f"/admin/audits/auditrun/{run.pk}/change/")
    assert redirect["Location"] == f"/admin/audits/dataset/{run.dataset_id}/change/?run={run.pk}"
    assert f"Audit #{run.pk}" in admin_client.get(redirect["Location"]).content.decode()
    assert admin_client.get("/admin/audits/auditrun/add/").status_code == 403


def test_a_failed_audit_and_a_failed_copy_say_why(admin_client, media_root):
    dataset = services.dataset_upload(content=SimpleUploadedFile("d.jsonl", planted_body()), original_name="d.jsonl")
    pending = services.dataset_scrub(dataset=dataset)
    (media_root / dataset.file.name).unlink()
    audited(dataset)
    services.dataset_derive_execute(dataset_id=pending.pk)
    page = admin_client.get(f"/admin/audits/dataset/{dataset.pk}/change/").content.decode()
    assert 'data-status="failed"' in page and "cannot be read" in page
    copy_page = admin_client.get(f"/admin/audits/dataset/{pending.pk}/change/").content.decode()
    assert 'data-status="failed"' in copy_page and "FileNotFoundError" in copy_page
    assert Dataset.objects.get(pk=pending.pk).status == DatasetStatus.FAILED
    assert 'data-action="scrub-placeholder"' not in copy_page  # nothing to scrub


def test_downloading_the_raw_file_needs_its_own_permission(client):
    dataset = services.dataset_upload(content=SimpleUploadedFile("d.jsonl", planted_body()), original_name="d.jsonl")
    viewer = UserFactory(username="viewer")
    viewer.user_permissions.add(*Permission.objects.filter(content_type__app_label="audits", codename__startswith="view_"))
    client.force_login(viewer)
    assert 'id="download-dataset"' not in client.get(f"/admin/audits/dataset/{dataset.pk}/change/").content.decode()
    refused = client.get(f"/admin/audits/dataset/{dataset.pk}/download/")
    assert refused.status_code == 403
    assert f"downloading dataset #{dataset.pk} needs the permission &#x27;audits.download_dataset&#x27;" in refused.content.decode()
    viewer.user_permissions.add(Permission.objects.get(content_type__app_label="audits", codename="download_dataset"))
    viewer = type(viewer).objects.get(pk=viewer.pk)
    client.force_login(viewer)
    assert 'id="download-dataset"' in client.get(f"/admin/audits/dataset/{dataset.pk}/change/").content.decode()
    response = client.get(f"/admin/audits/dataset/{dataset.pk}/download/")
    assert response.status_code == 200 and b"".join(response.streaming_content) == planted_body()


def test_the_dataset_page_gives_its_chart_as_text_and_scopes_its_headers(admin_client):
    """The difficulty chart is an image named by its <title> with every level's share in its <desc>;
    the tables' headers are scoped, the rebalance fields labelled, the download link underlined in text."""
    dataset = services.dataset_upload(content=SimpleUploadedFile("mixed.jsonl", planted_body()), original_name="mixed.jsonl",
                                      actor=admin_client.user)
    run = audited(dataset)

    html = admin_client.get(f"/admin/audits/dataset/{dataset.pk}/change/").content.decode()

    assert accessibility_problems(html) == []
    desc = next(node for node in parse(html).iter() if node.attrs.get("id") == "difficulty-chart-desc").all_text()
    counts = run.report["difficulty_counts"]
    assert sum(counts.values()) == run.valid
    assert desc == ", ".join(f"{level} {run.report['difficulty'][level]:.1%} ({counts[level]} line{'s' * (counts[level] != 1)})"
                             for level in ("easy", "medium", "hard"))


def test_the_self_reloading_page_says_so_and_can_be_told_to_stop(admin_client, reload_clock):
    """While the audit runs the page reloads every 2 s, which puts a screen reader and the keyboard focus
    back at the top each time (WCAG 2.2.1): it says so right after the title, before the page's content (the
    first thing reached after a reload), and offers to stop — for this page's links and every other page.
    Reached by a link it waits 20 s before the first reload: 2 s was too short to reach the button. The
    reload is of the page's own address (no url=…), so the browser keeps the scroll position."""
    dataset = services.dataset_upload(content=SimpleUploadedFile("a.jsonl", planted_body()), original_name="a.jsonl",
                                      actor=admin_client.user)
    url = f"/admin/audits/dataset/{dataset.pk}/change/"
    history_link = f"{url}?run={dataset.latest_audit_id}"  # the audit history's links: href="?run=N"

    visited = admin_client.get(history_link).content.decode()
    assert self_reload(visited) == (20, "")
    assert "This page reloads in 20 s, then every 2 s, while the work runs" in visited
    reload_clock.advance(20.3)  # the browser reloads when told, plus the time the page took to arrive
    reloading = admin_client.get(history_link).content.decode()  # from then on, every 2 s
    assert self_reload(reloading) == (2, "")
    assert "This page reloads every 2 s while the work runs" in reloading
    reload_clock.advance(2.2)
    assert self_reload(admin_client.get(history_link).content.decode()) == (2, "")
    assert 'name="refresh" value="off" id="stop-refresh">stop reloading</button>' in reloading
    assert reloading.index("<h1>") < reloading.index('id="stop-refresh"') < reloading.index('id="content-main"')
    assert f'name="next" value="{history_link}"' in reloading.replace("&amp;", "&")
    assert accessibility_problems(visited) == []

    reload_clock.advance(0.5)
    response = admin_client.post("/admin/auto-refresh/", {"refresh": "off", "next": history_link})
    assert response.status_code == 302 and response.url == history_link  # back where the button was
    for page_url in (history_link, url):  # the page again, and through its own link without the choice in it
        stopped = admin_client.get(page_url).content.decode()
        assert 'http-equiv="refresh"' not in stopped
        assert 'value="on" id="start-refresh">reload every 2 s</button>' in stopped
    assert accessibility_problems(stopped) == []

    # Turned back on just when the stopped reload would have been due: a visit again, with its 20 s.
    reload_clock.advance(1.6)
    admin_client.post("/admin/auto-refresh/", {"refresh": "on", "next": history_link})
    assert self_reload(admin_client.get(history_link).content.decode()) == (20, "")
    # Drawn while stopped, the page's other address asked for no reload: reached 20 s later, still a visit.
    reload_clock.advance(18.5)
    assert self_reload(admin_client.get(url).content.decode()) == (20, "")


def test_a_self_reloading_page_reached_by_a_link_always_waits_20_s(admin_client, reload_clock):
    """Only a reload that comes when the page asked for it reloads at the page's pace (2 s); the page's address
    copied, bookmarked or restored, sent to a colleague, or followed back before the reload was due, is a
    visit and waits 20 s (WCAG 2.2.1). The address of a reload is the page's own: nothing in it says "reload",
    so there is nothing to copy — `?reloaded=1` in a link, which used to skip the 20 s, does not."""
    dataset = services.dataset_upload(content=SimpleUploadedFile("a.jsonl", planted_body()), original_name="a.jsonl",
                                      actor=admin_client.user)
    url = f"/admin/audits/dataset/{dataset.pk}/change/"
    colleague = Client()
    colleague.force_login(UserFactory(username="colleague", is_superuser=True))

    def reload_of(page_url: str, *, by=admin_client) -> tuple[int, str] | None:
        return self_reload(by.get(page_url).content.decode())  # (seconds, "": the page's own address)

    assert reload_of(f"{url}?reloaded=1") == (20, "")  # a link copied from the address bar of the old pages
    reload_clock.advance(20.3)
    assert reload_of(f"{url}?reloaded=1") == (2, "")  # its reload, due then: at the page's pace
    reload_clock.advance(2.1)
    assert reload_of(url, by=colleague) == (20, "")  # the link sent to someone, in the middle of its sender's reloads
    assert reload_of(url) == (20, "")  # not this session's reload: a new visit (its 2 s reload was of ?reloaded=1)
    reload_clock.advance(5)  # followed back (a link, the back button) before the 20 s were up
    assert reload_of(url) == (20, "")
    reload_clock.advance(20.2)
    assert reload_of(url) == (2, "")
    reload_clock.advance(60)  # bookmarked, restored with the browser's tabs, or opened again a minute later
    assert reload_of(url) == (20, "")
    reload_clock.advance(20 + RELOAD_LATE_SECONDS + 0.5)  # a reload far later than asked (a slow page): a visit
    assert reload_of(url) == (20, "")


def _reloading_dataset_page(client: Client, reload_clock) -> str:
    """A busy dataset's page, visited and then reloaded once: at its 2 s pace, its last render just now."""
    dataset = services.dataset_upload(content=SimpleUploadedFile("a.jsonl", planted_body()), original_name="a.jsonl",
                                      actor=client.user)
    url = f"/admin/audits/dataset/{dataset.pk}/change/"
    assert self_reload(client.get(url).content.decode()) == (20, "")
    reload_clock.advance(20.3)
    assert self_reload(client.get(url).content.decode()) == (2, "")
    return url


def test_a_person_navigating_is_a_visit_whenever_it_comes(admin_client, reload_clock):
    """A second tab, a link middle-clicked or copied into one, F5 — landing when the page's reload was due —
    is a visit: the browser says a person navigated (`Sec-Fetch-User: ?1`, which a meta refresh does not
    send), and it waits 20 s. Without the header (a browser without Fetch Metadata) the timing alone tells:
    too early is a visit. A prefetch or a HEAD of the address is not shown: it leaves the reload as it was."""
    url = _reloading_dataset_page(admin_client, reload_clock)
    reload_clock.advance(2.0)
    assert self_reload(admin_client.get(url, HTTP_SEC_FETCH_USER="?1").content.decode()) == (20, "")
    assert self_reload(admin_client.get(url).content.decode()) == (20, "")  # the tab's own reload then waits too

    url = _reloading_dataset_page(admin_client, reload_clock)
    reload_clock.advance(1.0)
    assert self_reload(admin_client.get(url, HTTP_SEC_FETCH_USER="?1").content.decode()) == (20, "")
    url = _reloading_dataset_page(admin_client, reload_clock)
    reload_clock.advance(1.0)  # far too early for a 2 s reload
    assert self_reload(admin_client.get(url).content.decode()) == (20, "")
    url = _reloading_dataset_page(admin_client, reload_clock)
    reload_clock.advance(1.7)  # early by more than one clock allows
    assert self_reload(admin_client.get(url).content.decode()) == (20, "")

    url = _reloading_dataset_page(admin_client, reload_clock)
    reload_clock.advance(2.0)
    assert self_reload(admin_client.get(url, HTTP_SEC_PURPOSE="prefetch;prerender").content.decode()) == (20, "")
    assert self_reload(admin_client.get(url, HTTP_PURPOSE="prefetch").content.decode()) == (20, "")
    assert admin_client.head(url).status_code == 200
    assert self_reload(admin_client.get(url).content.decode()) == (2, "")  # the reload, due: at the page's pace


def test_web_machines_with_clocks_apart_keep_the_reload_pace(admin_client, reload_clock, monkeypatch):
    """Several web machines answer in turn; their clocks differ by 2 s. The time of a render is Redis's, not
    the machine's, so every reload is told as one: 2 s after 2 s, not 2 s and 20 s in turn."""
    import time

    real_time = time.time
    url = _reloading_dataset_page(admin_client, reload_clock)
    paces = []
    for skew in (2.0, 0.0, 2.0, 0.0, -2.0, 0.0):  # the machine that answers: its clock ahead, right, behind
        monkeypatch.setattr(time, "time", lambda skew=skew: real_time() + skew)
        reload_clock.advance(2.1)
        paces.append(self_reload(admin_client.get(url).content.decode()))
    assert paces == [(2, "")] * 6


def test_stopped_then_resumed_every_page_starts_with_its_20_s(admin_client, reload_clock):
    """Turned on again from one page, another page whose reload was due then is a visit too: drawn while the
    reloading was stopped, it kept no reload to count."""
    url = _reloading_dataset_page(admin_client, reload_clock)
    reload_clock.advance(0.3)
    admin_client.post("/admin/auto-refresh/", {"refresh": "off", "next": "/admin/"})
    reload_clock.advance(0.3)
    assert self_reload(admin_client.get(url).content.decode()) is None  # its reload, while stopped
    admin_client.post("/admin/auto-refresh/", {"refresh": "on", "next": "/admin/"})
    reload_clock.advance(1.4)  # when its 2 s reload would have been due
    assert self_reload(admin_client.get(url).content.decode()) == (20, "")


def test_without_redis_a_self_reloading_page_still_answers_and_waits_20_s(admin_client, reload_clock, settings,
                                                                           caplog, monkeypatch):
    """The page remembers its last render in Redis: Redis unreachable, the page is still drawn and every
    reload counts as a visit — 20 s, the side WCAG 2.2.1 asks for — rather than the page failing. Said once
    a minute, not twice a render."""
    from genesis import auto_refresh
    from genesis.logging import Throttled

    monkeypatch.setattr(auto_refresh, "_warnings", Throttled(60.0))
    dataset = services.dataset_upload(content=SimpleUploadedFile("a.jsonl", planted_body()), original_name="a.jsonl",
                                      actor=admin_client.user)
    url = f"/admin/audits/dataset/{dataset.pk}/change/"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": settings.REDIS_URL,
                                   "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}}}
    for _ in range(3):
        response = admin_client.get(url)
        assert response.status_code == 200 and self_reload(response.content.decode()) == (20, "")
        reload_clock.advance(20.3)
    warnings = [record.getMessage() for record in caplog.records if record.getMessage().startswith("auto refresh:")]
    assert len(warnings) == 1 and "unreachable (ConnectionError)" in warnings[0]
