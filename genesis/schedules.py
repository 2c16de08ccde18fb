"""Default Celery beat schedules, installed into django-celery-beat's tables so people can edit or
disable them in the admin. Installing never overwrites an existing entry's timing, task, arguments or
switch (an edit survives restarts and upgrades) but brings its description up to this release's (it
says what the task does, which a release may change); run by `seed_demo` and by `manage.py
install_schedules` on a deployment."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from genesis.notifications import REDELIVERY_EVERY_SECONDS

# The audits' and WaltzRL builds' sweeps: every 5 minutes, not every one. A queued job the workers have
# not reached yet looks like one whose message was lost, and each sweep sends it again; and a build
# waiting out a retry's countdown has no worker holding its lock. Each minute that made a duplicate per
# waiting job and, for builds, a parallel chain of retries that used up their attempts (second review).
STRANDED_SWEEP_EVERY_SECONDS = 300


@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    every_seconds: int | None = None
    crontab: str | None = None  # "minute hour day_of_month month_of_year day_of_week"
    kwargs: dict[str, object] = field(default_factory=dict)
    description: str = ""


# Each app adds its entries here.
DEFAULT_SCHEDULES: list[DefaultSchedule] = [
    DefaultSchedule(
        name="costs: daily cost report", task="costs.daily_cost_report", crontab="5 0 * * *",
        description="Markdown and CSV cost report (spend, budgets, alerts, fine-tuning jobs), sent to the alert channels.",
    ),
    DefaultSchedule(
        name="costs: resend stranded cost reports", task="costs.resend_stranded_reports", every_seconds=60,
        description="Sends again cost reports pending > 5 min (the broker was down) or left running by a killed worker, "
                    "at most 5 times, then marks them failed; makes the daily report again if beat fired it but its message was lost.",
    ),
    DefaultSchedule(
        name="costs: monthly storage charges", task="costs.charge_monthly_storage", crontab="15 0 * * *",
        description="Charges $2/month per stored fine-tuned model; runs daily, charges each model once a month.",
    ),
    DefaultSchedule(
        name="costs: redeliver budget alerts", task="costs.redeliver_budget_alerts", every_seconds=REDELIVERY_EVERY_SECONDS,
        description="Retries budget alerts whose notification channels failed.",
    ),
    DefaultSchedule(
        name="fine-tuning: sync active jobs", task="models_app.sync_active_fine_tuning_jobs", every_seconds=60,
        description="Asks the provider about every fine-tuning job still moving; on SUCCESS registers the model and its cost.",
    ),
    DefaultSchedule(
        name="benchmarks: resume stalled runs", task="models_app.benchmark_runs_resume", every_seconds=60,
        description="Hands the chunks of benchmark runs whose worker died (no ping answer or no heartbeat for 60 s) to live workers.",
    ),
    DefaultSchedule(
        name="experiments: evaluate guardrails", task="experiments.evaluate_guardrails", every_seconds=60,
        description="Judges every running experiment (sequential test): a breach rolls back, a sample-ratio mismatch pauses.",
    ),
    DefaultSchedule(
        name="experiments: flush exposures", task="experiments.flush_exposures", every_seconds=10,
        description="Writes the exposures /route buffered in Redis as Assignment rows.",
    ),
    DefaultSchedule(
        name="experiments: prune old outcomes", task="experiments.prune_outcomes", crontab="30 3 * * *",
        description="Deletes live outcomes older than GENESIS_RETAIN_LIVE_OUTCOMES_DAYS (90) and, when "
                    "GENESIS_RETAIN_ENDED_EXPERIMENTS_DAYS is set, the data of experiments ended longer ago; never a running or paused experiment's.",
    ),
    DefaultSchedule(
        name="sessions: clear expired sessions", task="genesis.clear_expired_sessions", crontab="45 3 * * *",
        description="Django's clearsessions: deletes expired admin sessions.",
    ),
    DefaultSchedule(
        name="audits: resend stranded audits", task="audits.sweep_stranded", every_seconds=STRANDED_SWEEP_EVERY_SECONDS,
        description="Sends again the audits and dataset copies whose message was lost (queued > 10 min) or whose "
                    "worker died (running > 1 min with no worker holding its lock); every 5 minutes.",
    ),
    DefaultSchedule(
        name="safety: resend stranded WaltzRL builds", task="safety.resend_stranded_builds", every_seconds=STRANDED_SWEEP_EVERY_SECONDS,
        description="Sends again WaltzRL builds queued > 5 min, or running > 1 min with no worker holding their lock, so they resume; every 5 minutes.",
    ),
    DefaultSchedule(
        name="launch: weekly Go/No-Go report", task="launch.send_launch_report", crontab="0 7 * * 1",
        description="The Go/No-Go report of every agent's candidate (markdown and HTML), sent to the alert channels the cost reports use.",
    ),
    DefaultSchedule(
        name="launch: tell approvers about stage requests", task="launch.notify_approvers", every_seconds=60,
        description="Emails the approvers of each new stage request (and posts to the webhook) once, and reminds once after GENESIS_APPROVAL_REMINDER_HOURS.",
    ),
    DefaultSchedule(
        name="launch: redeliver approval notices", task="launch.redeliver_approval_notices",
        every_seconds=REDELIVERY_EVERY_SECONDS,
        description="Retries the channels that failed to take a stage request's notice or reminder, as budget alerts are retried.",
    ),
]


# Beat's sweeps this often or more: their routine "received"/"succeeded"/"Sending due task" lines are DEBUG
# (genesis/logging.py QuietHousekeeping), so an idle worker and beat print nothing at INFO.
HOUSEKEEPING_MAX_INTERVAL_SECONDS = 60


def housekeeping_tasks() -> frozenset[str]:
    return frozenset(
        entry.task for entry in DEFAULT_SCHEDULES
        if entry.every_seconds is not None and entry.every_seconds <= HOUSEKEEPING_MAX_INTERVAL_SECONDS
    )


def install_default_schedules() -> list[str]:
    """Create the missing schedules and bring the descriptions of the others up to date; return the
    names created."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    created = []
    for entry in DEFAULT_SCHEDULES:
        if PeriodicTask.objects.filter(name=entry.name).exists():
            # An upgraded installation kept the text of the release that installed it (the audits'
            # sweep still said "killed past the time limit" after it had come to act within a minute).
            # update(), not save(): a description is no reason to make beat reload its schedule.
            PeriodicTask.objects.filter(name=entry.name).exclude(description=entry.description).update(
                description=entry.description
            )
            continue
        timing: dict[str, object] = {}
        if entry.every_seconds is not None:
            timing["interval"], _ = IntervalSchedule.objects.get_or_create(
                every=entry.every_seconds, period=IntervalSchedule.SECONDS
            )
        else:
            minute, hour, day_of_month, month_of_year, day_of_week = (entry.crontab or "").split()
            timing["crontab"], _ = CrontabSchedule.objects.get_or_create(
                minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                day_of_week=day_of_week,
            )
        PeriodicTask.objects.create(
            name=entry.name, task=entry.task, kwargs=json.dumps(entry.kwargs), description=entry.description, **timing
        )
        created.append(entry.name)
    return created
