"""The admin, the launch console and the read API on a production-sized database, against the same pages
on a database a hundredth of its size (bench/admin_scale/fill.py builds both), in one session.

Every page a person opens is timed server-side through Django's test client, logged in as a superuser:
each admin changelist (as it opens, each list_filter's first choice, a search with a typical term,
sorted by each sortable column, the date_hierarchy's month, page 2 and the last page), each admin's
change and history page of a representative row, the custom pages (launch board, approvals, an agent's
launch page, the Go/No-Go report, the cost dashboard, an experiment's page, a dataset's page, a
benchmark run's report, a model version's lineage) and the read API's list and detail endpoints.

Target: no page takes more than TARGET_RATIO times its time on the small database (time that grows
with the tables where it need not), and none more than TARGET_MS on the big one.

    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/N .venv/bin/python bench/admin_scale/run.py \\
        [--fill] [--repeats 5] [--only SUBSTRING]

Never touches the database DATABASE_URL names: it measures fill.py's databases beside it,
`<that name>_admin_scale_0_01` (small) and `<that name>_admin_scale_1` (big); `--fill` first builds them
(fill.py at --scale 0.01 and 1; a database already filled is kept). Each database is measured in a
process of its own (one Django connection each); REDIS_URL's index is flushed before each, so neither
reads the other's caches — it must be an index no one else uses (bench/scratch.py refuses to flush one
holding keys no bench made). The median of `--repeats` after one warm-up counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.admin_scale.fill import MARK, database_suffix  # noqa: E402
from bench.scratch import flush_redis, require_scratch, scratch_database  # noqa: E402
from bench.targets import meets_target, services_missing  # noqa: E402

SCALES = {"small": 0.01, "big": 1.0}

TARGET_RATIO = 3.0
TARGET_MS = 300.0
SEARCH_TERMS = {  # what a person types in each list's search box
    "costentry": "qa_agent", "modelversion": "scale1", "experiment": "qa_agent", "benchmarkrun": "qa_agent",
    "dataset": "tickets-1", "auditrun": "tickets-1", "finetuningjob": "qa_agent", "trainingfile": "train-1",
    "apikey": "scale key 1", "agent": "qa", "benchmarksuite": "core", "user": "admin",
}


def admin_pages() -> Iterator[tuple[str, str]]:
    """(name, URL) of every admin page the bench times; names do not depend on the rows' ids."""
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory
    from django.urls import NoReverseMatch, reverse

    request = RequestFactory().get("/")
    request.user = get_user_model().objects.get(username="bench-board")
    for model, model_admin in admin.site._registry.items():
        name = model._meta.model_name
        try:
            url = reverse(f"admin:{model._meta.app_label}_{name}_changelist")
        except NoReverseMatch:
            continue
        yield f"{name} list", url
        if model._meta.proxy:
            continue  # the cost dashboard: a page of its own, not a list
        changelist = model_admin.get_changelist_instance(request)
        for spec in changelist.filter_specs:
            choices = list(spec.choices(changelist))
            if len(choices) > 1:
                yield f"{name} list, filter {spec.title}", url + str(choices[1]["query_string"])
        if model_admin.search_fields:
            yield f"{name} list, search", f"{url}?q={SEARCH_TERMS.get(str(name), 'qa')}"
        sortable_by = model_admin.get_sortable_by(request)  # the column headers a person can click
        for index, column in enumerate(changelist.list_display):
            if column in sortable_by and changelist.get_ordering_field(column) is not None:
                yield f"{name} list, sort by {getattr(column, '__name__', column)}", f"{url}?o={index}"
        if model_admin.date_hierarchy:
            newest = model._default_manager.order_by(f"-{model_admin.date_hierarchy}").values_list(model_admin.date_hierarchy, flat=True).first()
            if newest is not None:
                field = model_admin.date_hierarchy
                yield f"{name} list, {field} month", f"{url}?{field}__year={newest.year}&{field}__month={newest.month}"
        if changelist.paginator.num_pages > 1:
            yield f"{name} list, page 2", f"{url}?p=2"
            yield f"{name} list, last page", f"{url}?p={changelist.paginator.num_pages}"
        row = model._default_manager.order_by("-pk").first()
        if row is not None:
            yield f"{name} change page", reverse(f"admin:{model._meta.app_label}_{name}_change", args=[row.pk])
            yield f"{name} history", reverse(f"admin:{model._meta.app_label}_{name}_history", args=[row.pk])


def custom_pages() -> Iterator[tuple[str, str]]:
    from django.urls import reverse

    from audits.models import Dataset
    from experiments.models import Experiment
    from models_app.benchmarks.models import BenchmarkRun
    from models_app.registry.models import ModelVersion

    running = Experiment.objects.filter(status="running").order_by("agent__slug").first()
    ended = Experiment.objects.filter(status="completed").order_by("-pk").first()
    yield "launch board", "/admin/"
    yield "approvals queue", reverse("launch_approvals")
    yield "agent launch page", reverse("launch_agent", args=["qa_agent"])
    yield "Go/No-Go report (json)", reverse("launch_report_download") + "?format=json"
    yield "Go/No-Go report (html)", reverse("launch_report_download") + "?format=html"
    assert running is not None and ended is not None
    yield "experiment page (running)", reverse("admin:experiments_experiment_change", args=[running.pk])
    yield "experiment page (ended)", reverse("admin:experiments_experiment_change", args=[ended.pk])
    dataset = Dataset.objects.exclude(latest_audit=None).order_by("-pk").first()
    assert dataset is not None
    yield "dataset page", reverse("admin:audits_dataset_change", args=[dataset.pk])
    run = BenchmarkRun.objects.filter(status="completed").order_by("-pk").first()
    assert run is not None
    yield "benchmark run report", reverse("admin:models_app_benchmarkrun_change", args=[run.pk])
    version = ModelVersion.objects.filter(kind="fine_tuned", status="rolling_out").order_by("agent__slug").first()
    assert version is not None
    yield "model version lineage (rolling out)", reverse("admin:models_app_modelversion_change", args=[version.pk])


def api_pages() -> Iterator[tuple[str, str]]:
    from audits.models import AuditRun, Dataset
    from experiments.models import Experiment
    from models_app.benchmarks.models import BenchmarkRun
    from models_app.finetuning.models import FineTuningJob
    from models_app.registry.models import ModelVersion

    def newest(model: Any) -> int:
        return int(model.objects.order_by("-pk").values_list("pk", flat=True)[0])

    running = Experiment.objects.filter(status="running", agent__slug="qa_agent").get()
    run = BenchmarkRun.objects.filter(status="completed").order_by("-pk").values_list("pk", flat=True)[0]
    version = ModelVersion.objects.filter(kind="fine_tuned", status="rolling_out", agent__slug="qa_agent").get()
    for name, path in (
        ("agents", "agents"), ("agent", "agents/qa_agent"), ("agent config", "agents/qa_agent/config"),
        ("agent health", "agents/qa_agent/health"), ("experiment results (running)", f"experiments/{running.key}/results"),
        ("costs summary", "costs/summary"), ("datasets", "audits/datasets"), ("dataset", f"audits/datasets/{newest(Dataset)}"),
        ("audit run", f"audits/runs/{newest(AuditRun)}"), ("fine-tuning jobs", "fine-tuning/jobs"),
        ("fine-tuning job", f"fine-tuning/jobs/{newest(FineTuningJob)}"), ("benchmark runs", "benchmarks/runs"),
        ("benchmark run", f"benchmarks/runs/{run}"), ("lineage (rolling out)", f"models/{version.pk}/lineage"),
    ):
        yield f"API {name}", f"/api/v1/{path}"


def measure(repeats: int, only: str) -> dict[str, dict[str, Any]]:
    """The scratch database fill.py built (refused anywhere else: it adds a user and an API key): each
    page's median milliseconds and its query count."""
    require_scratch()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from models_app.registry.models import ModelVersion
    from models_app.registry.services import api_key_create

    if not ModelVersion.objects.filter(reason=MARK).exists():
        raise SystemExit(f"{connection.settings_dict['NAME']} holds no history: run bench/admin_scale/run.py with --fill")
    flush_redis(settings.REDIS_URL)
    setup_test_environment()  # the test client's host, "testserver", is allowed
    user, _ = get_user_model().objects.get_or_create(username="bench-board", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    _, raw_key = api_key_create(label="bench/admin_scale", all_agents=True)
    pages = [*admin_pages(), *custom_pages(), *api_pages()]
    measured: dict[str, dict[str, Any]] = {}
    for name, url in pages:
        if only not in name:
            continue
        headers = {"Authorization": f"Bearer {raw_key}"} if url.startswith("/api/") else {}
        connection.queries_log.clear()  # a full log (9 000 queries) would count none
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, headers=headers)  # warm-up: caches, plans
        if response.status_code not in (200, 302):  # 302: a change page that leads to the row's own page (audit runs)
            raise SystemExit(f"{name}: {url} answered {response.status_code}")
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.get(url, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
        measured[name] = {"ms": statistics.median(times), "queries": len(queries), "url": url}
        print(f"  {name}: {measured[name]['ms']:.0f} ms", file=sys.stderr, flush=True)
    return measured


def in_child(size: str, repeats: int, only: str) -> dict[str, dict[str, Any]]:
    done = subprocess.run([sys.executable, __file__, "--child", size, "--repeats", str(repeats), "--only", only],
                          check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fill", action="store_true", help="build both databases first")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="time only the pages whose name holds this")
    parser.add_argument("--child", choices=SCALES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if services_missing("the bench measures PostgreSQL's plans", redis=True):
        return 2
    if args.child:
        with scratch_database(database_suffix(SCALES[args.child]), keep=True, redis=True):
            print(json.dumps(measure(args.repeats, args.only)))
        return 0
    if args.fill:
        for scale in SCALES.values():
            subprocess.run([sys.executable, str(ROOT / "bench/admin_scale/fill.py"), "--scale", f"{scale:g}"], check=True)
    small = in_child("small", args.repeats, args.only)
    big = in_child("big", args.repeats, args.only)
    print(f"{'page':<58} {'small ms':>9} {'big ms':>8} {'ratio':>6} {'queries':>8}")
    worst_ratio, slowest = 0.0, 0.0
    for name, measured in big.items():
        base = small.get(name)
        ratio = measured["ms"] / base["ms"] if base else float("nan")
        queries = f"{base['queries'] if base else '?'}/{measured['queries']}"
        print(f"{name[:58]:<58} {base['ms'] if base else float('nan'):>9.0f} {measured['ms']:>8.0f} {ratio:>6.2f} {queries:>8}")
        if base:
            worst_ratio = max(worst_ratio, ratio)
        slowest = max(slowest, measured["ms"])
    met = meets_target("worst ratio big / small", worst_ratio, at_most=TARGET_RATIO)
    met &= meets_target("slowest page on the big database", slowest, at_most=TARGET_MS, digits=0, unit=" ms")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
