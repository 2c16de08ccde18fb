"""axe-core over every page Genesis draws itself (templates/), in headless Chromium, light and dark.

Not a speed bench: it prints, per page and colour scheme, the WCAG 2.1 A/AA rules axe-core finds
violated, and exits 1 when any is — except `meta-refresh` on a page that offers its "stop reloading"
button (#stop-refresh, admin/includes/auto_refresh_notice.html), which WCAG 2.2.1 accepts ("the user
is allowed to turn off the time limit") but axe-core cannot see: that one is listed apart, as accepted. axe-core is not a dependency of the project (npm, not PyPI), so the
test suite never needs it; the checks axe cannot make (charts' text alternatives, status in words not
only colour, header scopes, labelled fields) are tests/accessibility.py's, which the admin pages' tests
run (and tests/genesis/test_accessibility_checks.py checks).

    npm install --prefix /some/dir axe-core@4
    DATABASE_URL=postgres://…/genesis REDIS_URL=redis://…/<n> GENESIS_SIMULATOR_API_KEY=sim-key \
        .venv/bin/python bench/a11y/run.py --axe /some/dir/node_modules/axe-core/axe.min.js [--json out.json]

Never writes into the database DATABASE_URL names: it makes `<that name>_a11y_bench` beside it
(bench/scratch.py, dropped at the end), seeds the demo world there, then fills it as a working week would
(benchmark runs with verdicts, an audited dataset with PII, duplicates and format errors, a fine-tuning
job, running rollouts with outcomes and a pending approval, spend that crossed two budget thresholds),
serves it from a thread and logs in as a second superuser, so the approve buttons are offered. That
user's password is random, made for this run. REDIS_URL must be a Redis database nothing else uses (a
running worker would take the tasks the services enqueue): the bench claims it (bench/scratch.py) and
refuses one holding keys no bench made.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import sys
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402
from bench.synthetic_outcomes import fill_outcomes  # noqa: E402
from bench.targets import services_missing  # noqa: E402

if TYPE_CHECKING:
    from django.test.testcases import LiveServerThread

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
STOP_RELOADING_ID = "stop-refresh"  # admin/includes/auto_refresh_notice.html's button
APPROVER = "a11y-approver"

# One line of the audited file per finding the dataset page can show: PII of several types, an exact
# and a near duplicate, a line that breaks Mistral's format, and plain lines of each difficulty.
DATASET_LINES = [
    {"messages": [{"role": "user", "content": "Mail me at jane.doe@example.com or call +1 415 555 0100."},
                  {"role": "assistant", "content": "Noted, thank you."}]},
    {"messages": [{"role": "user", "content": "My card is 4111 1111 1111 1111, my IP 203.0.113.7."},
                  {"role": "assistant", "content": "Please never share a card number here."}]},
    {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "user", "content": "What is the capital of France ?"}, {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "assistant", "content": "An answer without a question."}]},
    {"messages": [{"role": "user", "content": "Prove step by step that the sum of two even integers is even, then write "
                                               "a Python function that checks it for all pairs below 100."},
                  {"role": "assistant", "content": "Let a = 2m and b = 2n; then a + b = 2(m + n). def check(): ..."}]},
]


def start_simulator_and_django() -> None:
    """The simulator in a thread of this process, then Django, which reads the simulator's address."""
    from models_app.simulator import SimulatorConfig, start_in_thread

    # The simulator first, on a port of its own: seed_demo gives the demo provider GENESIS_SIMULATOR_URL,
    # the one address the simulator's key may be sent to.
    key = os.environ.get("GENESIS_SIMULATOR_API_KEY", "sim-key")
    simulator, simulator_url = start_in_thread(SimulatorConfig(port=0, seed=7, job_seconds=3600, api_keys=frozenset({key})))
    os.environ["GENESIS_SIMULATOR_URL"] = simulator_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
    import django

    django.setup()


def build_world(*, password: str) -> dict[str, str]:
    """The demo world after a working week; returns the paths of the pages to check, by name."""
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.urls import reverse
    from django.utils import timezone

    from audits.services import audit_run_execute, dataset_upload
    from costs.models import CostEntry
    from costs.services import budget_upsert, cost_record
    from experiments.guardrail_check import guardrails_check
    from experiments.models import Experiment
    from experiments.services import experiment_start, stage_request_advance
    from models_app.benchmarks.models import BenchmarkChunk, BenchmarkSuite
    from models_app.benchmarks.runner import benchmark_chunk_execute
    from models_app.benchmarks.services import benchmark_run_create
    from models_app.finetuning.services import finetuning_job_create
    from models_app.finetuning.training_files import training_file_from_dataset
    from models_app.registry.models import Agent, ModelVersion

    call_command("seed_demo", stdout=io.StringIO())  # on the scratch database, migrated as it was made

    User = get_user_model()
    admin = User.objects.filter(is_superuser=True).order_by("pk").first()
    # Not the requester: offered the approve button.
    User.objects.create_superuser(username=APPROVER, email="approver@example.com", password=password)

    agents = {agent.slug: agent for agent in Agent.objects.all()}
    runs = {}
    for slug in ("content_agent", "qa_agent"):
        run = benchmark_run_create(agent=agents[slug], actor=admin)
        for chunk in BenchmarkChunk.objects.filter(run=run):
            benchmark_chunk_execute(chunk_id=chunk.pk, worker="bench-a11y")
        runs[slug] = run

    lines = "\n".join(json.dumps(line) for line in DATASET_LINES) + "\n"
    dataset = dataset_upload(content=SimpleUploadedFile("support_week.jsonl", lines.encode()),
                             original_name="support_week.jsonl", agent=agents["support_agent"], actor=admin)
    assert dataset.latest_audit_id is not None
    audit_run_execute(run_id=dataset.latest_audit_id)
    demo = (ROOT / "models_app" / "finetuning" / "demo_data" / "support_agent_train.jsonl").read_bytes()
    clean = dataset_upload(content=SimpleUploadedFile("support_train.jsonl", demo), original_name="support_train.jsonl",
                           agent=agents["support_agent"], actor=admin)
    assert clean.latest_audit_id is not None
    audit_run_execute(run_id=clean.latest_audit_id)
    clean.refresh_from_db()
    job = finetuning_job_create(agent=agents["support_agent"], actor=admin, auto_start=True, hyperparameters={"epochs": 1},
                                training_file=training_file_from_dataset(dataset=clean, actor=admin))

    for draft in Experiment.objects.filter(status="draft", agent__slug__in=["content_agent", "legal_agent"]):
        if not Experiment.objects.filter(agent=draft.agent, status="running").exists():
            experiment_start(experiment=draft, actor=admin, override_reason="bench/a11y: a rollout to read")
    running = list(Experiment.objects.filter(status="running").order_by("pk"))
    for experiment in running:
        fill_outcomes(experiment, outcomes=4000, prefix="bench-a11y-")
        guardrails_check(experiment_id=experiment.pk)
    pending = Experiment.objects.filter(status="running").order_by("pk").first()
    if pending is not None and not pending.stages.filter(approvals__status="pending").exists():
        stage_request_advance(experiment=pending, actor=admin, note="ready for 25 % after the weekend")

    budget_upsert(name="default", amount_usd=Decimal("30"), thresholds=[25, 50, 83], hard_limit=True)
    now = timezone.now()
    charges = [("qa_agent", "benchmark", "6.20", 6), ("legal_agent", "fine_tuning", "4.00", 4),
               ("qa_agent", "inference", "2.80", 2), ("content_agent", "inference", "3.10", 1)]
    for slug, operation, amount, days_ago in charges:
        cost_record(agent=agents[slug], operation=operation, amount_usd=Decimal(amount),
                    idempotency_key=f"bench-a11y-{slug}-{operation}", occurred_at=now - timedelta(days=days_ago))

    entry = CostEntry.objects.order_by("pk").first()
    candidate = ModelVersion.objects.filter(agent__slug="content_agent").order_by("-pk").first()
    suite = BenchmarkSuite.objects.order_by("pk").first()
    assert entry is not None and candidate is not None and suite is not None and pending is not None
    return {
        "launch board": reverse("launch_board"),
        "agent launch page": reverse("launch_agent", args=["content_agent"]),
        "approvals queue": reverse("launch_approvals"),
        "experiment (rollout panel)": reverse("admin:experiments_experiment_change", args=[pending.pk]),
        "cost dashboard": reverse("admin:costs_costdashboard_changelist"),
        "cost ledger": reverse("admin:costs_costentry_changelist"),
        "cost entry reverse": reverse("admin:costs_costentry_reverse", args=[entry.pk]),
        "cost reports": reverse("admin:costs_costreport_changelist"),
        "dataset audit": reverse("admin:audits_dataset_change", args=[dataset.pk]),
        "benchmark run (PASS)": reverse("admin:models_app_benchmarkrun_change", args=[runs["content_agent"].pk]),
        "benchmark run (qa)": reverse("admin:models_app_benchmarkrun_change", args=[runs["qa_agent"].pk]),
        "benchmark start": reverse("admin:models_app_benchmarkrun_add"),
        "suite import": reverse("admin:models_app_benchmarksuite_import"),
        "model version (lineage)": reverse("admin:models_app_modelversion_change", args=[candidate.pk]),
        "model version transition": reverse("admin:models_app_modelversion_transition", args=[candidate.pk]),
        "fine-tuning job": reverse("admin:models_app_finetuningjob_change", args=[job.pk]),
        "fine-tuning adopt": reverse("admin:models_app_finetuningjob_adopt", args=[job.pk]),
        "agent settings": reverse("admin:models_app_agent_change", args=[agents["content_agent"].pk]),
    }


def serve() -> LiveServerThread:
    """The site, static files included, from a thread of this process, on 127.0.0.1:`server.port`."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test.testcases import LiveServerThread

    server = LiveServerThread("127.0.0.1", StaticFilesHandler)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    return server


def axe_pages(base: str, pages: dict[str, str], *, password: str, axe_path: Path,
              schemes: list[Literal["light", "dark"]], width: int, zoom_width: int | None) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.1 A/AA violations of every page in every colour scheme (and, with
    `zoom_width`, at that CSS width: 1280 px at 200 % zoom is 640 CSS px)."""
    from playwright.sync_api import sync_playwright

    script = axe_path.read_text()
    results: list[dict[str, Any]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            views: list[tuple[Literal["light", "dark"], int]] = [(scheme, width) for scheme in schemes]
            if zoom_width:
                views.append(("light", zoom_width))
            for scheme, view_width in views:
                context = browser.new_context(viewport={"width": view_width, "height": 900}, color_scheme=scheme)
                page = context.new_page()
                page.goto(f"{base}/admin/login/")
                page.fill("#id_username", APPROVER)
                page.fill("#id_password", password)
                page.click("input[type=submit]")
                page.wait_for_url(f"{base}/admin/")
                for name, path in pages.items():
                    page.goto(base + path)
                    page.add_script_tag(content=script)
                    found = page.evaluate(
                        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})"
                        ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
                        " nodes: v.nodes.map(n => n.target.join(' '))})))",
                        WCAG_TAGS,
                    )
                    overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
                    can_stop = page.evaluate("id => document.getElementById(id) !== null", STOP_RELOADING_ID)
                    results.append({"page": name, "path": path, "scheme": scheme, "width": view_width,
                                    "violations": found, "horizontal_scroll": overflow, "can_stop_reloading": can_stop})
                context.close()
        finally:
            browser.close()
    return results


def is_accepted(violation: dict[str, Any], result: dict[str, Any]) -> bool:
    """A self-reload the page itself offers to stop (see the docstring): accepted, not a finding."""
    return violation["id"] == "meta-refresh" and bool(result.get("can_stop_reloading"))


def report(results: list[dict[str, Any]], say: Callable[[str], None] = print) -> int:
    """Print the violations per page, accepted ones apart; returns how many (rule, page, view) violations
    there are, not counting the accepted ones."""
    total = accepted = 0
    for result in results:
        view = f"{result['scheme']}, {result['width']} px"
        found = [v for v in result["violations"] if not is_accepted(v, result)]
        allowed = [v for v in result["violations"] if is_accepted(v, result)]
        total, accepted = total + len(found), accepted + len(allowed)
        nodes = sum(len(v["nodes"]) for v in found)
        scroll = " · scrolls sideways" if result["horizontal_scroll"] else ""
        also = f" (+{len(allowed)} accepted)" if allowed else ""
        say(f"{result['page']} ({view}): {len(found)} violation(s), {nodes} element(s){also}{scroll}")
        for violation in found:
            say(f"  {violation['impact']:<8} {violation['id']}: {violation['help']} — {len(violation['nodes'])} × "
                f"{', '.join(violation['nodes'][:3])}")
        for violation in allowed:
            say(f"  accepted {violation['id']}: the page reloads itself and offers #{STOP_RELOADING_ID}")
    say(f"total: {total} violation(s) over {len(results)} page views; accepted: {accepted} meta-refresh on pages "
        f"with the stop-reloading button")
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--axe", type=Path, required=True, help="axe.min.js of axe-core 4 (npm install axe-core@4)")
    parser.add_argument("--schemes", nargs="+", default=["light", "dark"], choices=["light", "dark"])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--zoom-width", type=int, default=640,
                        help="also check at this CSS width (1280 px at 200 %% zoom); 0 skips it")
    parser.add_argument("--json", type=Path, help="write every violation with its elements here")
    args = parser.parse_args()
    if not args.axe.is_file():
        print(f"{args.axe}: no such file — npm install axe-core@4 somewhere and pass its axe.min.js", file=sys.stderr)
        return 2
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get install chromium", file=sys.stderr)
        return 2
    if services_missing("the world is built with the real services", redis=True):
        return 2
    password = secrets.token_urlsafe(24)
    start_simulator_and_django()
    with scratch_database("a11y_bench", redis=True):
        pages = build_world(password=password)
        server = serve()
        try:
            results = axe_pages(f"http://127.0.0.1:{server.port}", pages, password=password, axe_path=args.axe, schemes=args.schemes,
                                width=args.width, zoom_width=args.zoom_width or None)
        finally:
            server.terminate()  # its threads' connections closed, so the scratch database can be dropped
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if report(results) else 0


if __name__ == "__main__":
    sys.exit(main())
