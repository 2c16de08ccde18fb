"""`manage.py fine_tune …`: fine-tuning jobs from a terminal, through the services the admin uses.

    fine_tune upload --agent support_agent models_app/finetuning/demo_data/support_agent_train.jsonl
    fine_tune create --agent support_agent --training models_app/finetuning/demo_data/support_agent_train.jsonl --epochs 2
    fine_tune start 3 | cancel 3 | sync 3 | sync --all | status [3] [--agent A] [--json]
    fine_tune status --provider sim-ft            # the provider's jobs, tracked or not
    fine_tune adopt 3 <provider job id> --as lead # link job 3 to the job its lost creation made

Exit status: 0 done; 1 refused (by a rule, a budget, a permission or the provider — the reason is
printed; also a training file with invalid lines); 2 usage error (unknown agent, job, file or user; bad
options, including values the service refuses as invalid input, such as --epochs -1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Model, QuerySet

from costs.budgeting import format_usd
from genesis.commands import command_agent, command_user
from genesis.errors import DomainError, InvalidInput
from genesis.permissions import Actor
from models_app.finetuning import rules, services, training_files
from models_app.finetuning.adoption import finetuning_job_adopt
from models_app.finetuning.models import FineTuningJob, TrainingFile, TrainingFilePurpose
from models_app.finetuning.selectors import jobs_for_agents, jobs_to_sync
from models_app.registry.models import Agent, ProviderAccount

USAGE = 2
REFUSED = 1

Row = TypeVar("Row", bound=Model)


def _by_id_or_provider_id(rows: QuerySet[Row], reference: str, *, provider_id_field: str) -> Row | None:
    """The row a person named on the command line: by our id when it is a number, else (or when no
    row has that id) by the provider's id."""
    found = rows.filter(pk=int(reference)).first() if reference.isdigit() else None
    return found or rows.filter(**{provider_id_field: reference}).first()


def job_summary(job: FineTuningJob) -> dict[str, Any]:
    """One job as JSON (money as decimal strings)."""
    return {
        "id": job.pk,
        "agent": job.agent.slug,
        "provider": job.provider.name,
        "provider_job_id": job.provider_job_id or None,
        "base_model": job.base_model,
        "status": job.status,
        "provider_status": job.provider_status or None,
        "hyperparameters": job.hyperparameters,
        "trained_tokens": job.trained_tokens,
        "estimated_cost_usd": None if job.estimated_cost_usd is None else str(job.estimated_cost_usd),
        "cost_usd": None if job.cost_usd is None else str(job.cost_usd),
        "cost_recorded": job.cost_recorded_at is not None,
        "fine_tuned_model": job.fine_tuned_model or None,
        "model_version_id": job.model_version_id,
        "last_error": job.last_error or None,
        "provider_answer": job.provider_answer or None,
        "provider_answer_status": job.provider_answer_status,
        "created_at": job.created_at.isoformat(),
        "last_synced_at": job.last_synced_at.isoformat() if job.last_synced_at else None,
    }


def job_cost_text(job: FineTuningJob) -> str:
    """What the job costs, saying whose figure it is: the provider's final cost once it is on the
    ledger, before that the provider's running estimate, or our estimate made before creation; for a
    job that ended without a charge (refused, failed, cancelled) no estimate, but for one the provider
    ended (failed, cancelled) its figure when it reported one — labelled as not on the ledger (only a
    SUCCESS is charged there)."""
    if job.cost_recorded_at is None and job.status in rules.UNCHARGED_STATUSES:
        ended = job.get_status_display().lower()
        if job.cost_usd is None or job.status not in rules.TERMINAL_STATUSES:  # REFUSED: no final word from it
            return f"— ({ended}, not charged)"
        amount = format_usd(job.cost_usd) if job.cost_currency in ("", "USD") else f"{job.cost_usd} {job.cost_currency}"
        return f"{amount} reported by the provider ({ended}; not on the ledger)"
    if job.cost_usd is None:
        return "—" if job.estimated_cost_usd is None else f"≈{format_usd(job.estimated_cost_usd)} (our estimate)"
    amount = format_usd(job.cost_usd) if job.cost_currency in ("", "USD") else f"{job.cost_usd} {job.cost_currency}"
    return amount if job.cost_recorded_at is not None else f"≈{amount} (the provider's estimate until the job ends)"


def add_audit_override(parser: CommandParser) -> None:
    parser.add_argument("--audit-override-reason", metavar="TEXT",
                        help="train on data whose audit found PII or format errors anyway (needs --as a user with "
                             "models_app.override_training_audit); otherwise use its scrubbed copy (audit_dataset --scrub)")


class Command(BaseCommand):
    help = "Upload training files and create, start, cancel, sync and list fine-tuning jobs (the admin's services)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{upload,create,submit,start,cancel,sync,status,adopt}")

        def add(name: str, help_text: str) -> CommandParser:
            sub = actions.add_parser(name, help=help_text)
            sub.add_argument("--as", dest="username", metavar="USERNAME",
                             help="act as this user (permissions and history); default: the system")
            sub.add_argument("--json", action="store_true", help="print one JSON object")
            return sub

        upload = add("upload", "check a chat JSONL file line by line and upload it for an agent")
        upload.add_argument("path")
        upload.add_argument("--agent", required=True)
        upload.add_argument("--purpose", choices=TrainingFilePurpose.values, default=TrainingFilePurpose.TRAINING)
        upload.add_argument("--provider", help="provider account name (default: the one serving the agent's baseline)")
        upload.add_argument("--provider-file-id", metavar="ID", default="", help="record the provider's file ID (uploaded after the "
                            "restored backup) instead of uploading a copy; its downloaded content must be PATH's bytes")
        add_audit_override(upload)

        create = add("create", "estimate, check the budget, and create a job at the provider")
        create.add_argument("--agent", required=True)
        training = create.add_mutually_exclusive_group(required=True)
        training.add_argument("--training", metavar="PATH", help="upload this file first")
        training.add_argument("--training-file", metavar="ID", help="a training file uploaded before (id or provider file id)")
        validation = create.add_mutually_exclusive_group()
        validation.add_argument("--validation", metavar="PATH")
        validation.add_argument("--validation-file", metavar="ID")
        create.add_argument("--base-model", help="default: the base model of the agent's baseline")
        length = create.add_mutually_exclusive_group()
        length.add_argument("--epochs", type=float)
        length.add_argument("--training-steps", type=int)
        create.add_argument("--learning-rate", type=float)
        create.add_argument("--suffix", default="")
        create.add_argument("--auto-start", action="store_true", help="the provider starts training once validated")
        create.add_argument("--override-reason", help="go over a hard budget (needs --as a user with costs.override_budget)")
        create.add_argument("--no-submit", action="store_true", help="save the job without creating it at the provider yet")
        add_audit_override(create)

        for name, help_text in (("start", "start a validated job"), ("submit", "create a saved job at the provider"),
                                ("cancel", "cancel a job")):
            sub = add(name, help_text)
            sub.add_argument("job", help="job id (or the provider's job id)")
            if name == "cancel":
                sub.add_argument("--reason", default="")

        adopt = add("adopt", "link a job whose creation was never answered to the job the provider made for it")
        adopt.add_argument("job", help="job id (NOT_CREATED)")
        adopt.add_argument("provider_job_id", help="the provider's job id (fine_tune status --provider NAME lists them)")
        adopt.add_argument("--reason", default="", help="kept in the job's history")

        sync = add("sync", "ask the provider now (as beat does every minute)")
        target = sync.add_mutually_exclusive_group(required=True)
        target.add_argument("job", nargs="?", help="job id (or the provider's job id)")
        target.add_argument("--all", action="store_true", help="every job the provider may still change")

        status = add("status", "list jobs, or show one")
        status.add_argument("job", nargs="?")
        status.add_argument("--agent")
        status.add_argument("--limit", type=int, default=20)
        status.add_argument("--provider", help="list the jobs this provider account holds, tracked or not")

    # --- entry ------------------------------------------------------------------------------------
    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json = options["json"]
        self.audit_override_reason = options.get("audit_override_reason")
        actor = command_user(options.get("username"))
        handler = getattr(self, f"_{options['action']}")
        try:
            handler(options, actor)
        except training_files.TrainingFileInvalid as exc:
            for line, detail in exc.problems:
                self.stderr.write(detail if line else f"file: {detail}")
            advice = "Fix them and upload again (manage.py audit_dataset FILE lists every problem, with PII and duplicates)"
            raise CommandError(exc.advised(advice).message, returncode=REFUSED) from None
        except InvalidInput as exc:
            # What the API answers with 422: the arguments given cannot be used (CONTRACT: 2 = usage error).
            raise CommandError(exc.message, returncode=USAGE) from None
        except DomainError as exc:
            raise CommandError(exc.message, returncode=REFUSED) from None

    # --- actions ----------------------------------------------------------------------------------
    def _upload(self, options: dict[str, Any], actor: Actor) -> None:
        agent = command_agent(options["agent"])
        training_file = self._upload_path(options["path"], agent=agent, purpose=options["purpose"],
                                          provider=self._provider(options.get("provider")), actor=actor,
                                          provider_file_id=options["provider_file_id"])
        if self.as_json:
            self.stdout.write(json.dumps({
                "id": training_file.pk, "provider_file_id": training_file.provider_file_id, "agent": agent.slug,
                "purpose": training_file.purpose, "lines": training_file.line_count,
                "estimated_tokens": training_file.estimated_tokens, "sha256": training_file.sha256,
            }))
        else:
            self.stdout.write(
                f"{'recorded' if options['provider_file_id'] else 'uploaded'} {training_file.filename} for {agent.slug}: "
                f"{training_file.line_count} samples, "
                f"~{training_file.estimated_tokens} tokens, provider file {training_file.provider_file_id} "
                f"(training file id {training_file.pk})"
            )

    def _create(self, options: dict[str, Any], actor: Actor) -> None:
        agent = command_agent(options["agent"])
        if options["training"]:
            training_file = self._upload_path(options["training"], agent=agent, purpose=TrainingFilePurpose.TRAINING, actor=actor)
        else:
            training_file = self._training_file(options["training_file"], purpose=TrainingFilePurpose.TRAINING)
        validation_file = None
        if options["validation"]:
            validation_file = self._upload_path(options["validation"], agent=agent, purpose=TrainingFilePurpose.VALIDATION,
                                                provider=training_file.provider, actor=actor)
        elif options["validation_file"]:
            validation_file = self._training_file(options["validation_file"], purpose=TrainingFilePurpose.VALIDATION)
        hyperparameters = {
            name: options[name] for name in ("epochs", "training_steps", "learning_rate") if options.get(name) is not None
        }
        job = services.finetuning_job_create(
            agent=agent, training_file=training_file, validation_file=validation_file,
            base_model=options.get("base_model"), hyperparameters=hyperparameters, suffix=options["suffix"],
            auto_start=options["auto_start"], actor=actor, override_reason=options.get("override_reason"),
            submit=not options["no_submit"], audit_override_reason=self.audit_override_reason,
        )
        self._print(job)
        for checked in filter(None, (training_file, validation_file)):
            audit = training_files.training_file_audit(checked)
            if audit is None:
                continue
            for warning in rules.training_data_findings(audit.report or {}).warnings:
                self.stderr.write(f"warning: {checked.filename}: its audit (dataset #{audit.dataset_id}) found {warning}")
        if job.status == rules.REFUSED or (job.status == rules.NOT_CREATED and job.last_error):
            raise CommandError(f"job #{job.pk} was saved but not created at the provider: {job.last_error}", returncode=REFUSED)

    def _submit(self, options: dict[str, Any], actor: Actor) -> None:
        job = services.finetuning_job_submit(job=self._job(options["job"]), actor=actor)
        self._print(job)
        if job.status in (rules.REFUSED, rules.NOT_CREATED):
            raise CommandError(f"job #{job.pk} was not created at the provider: {job.last_error}", returncode=REFUSED)

    def _start(self, options: dict[str, Any], actor: Actor) -> None:
        self._print(services.finetuning_job_start(job=self._job(options["job"]), actor=actor))

    def _cancel(self, options: dict[str, Any], actor: Actor) -> None:
        self._print(services.finetuning_job_cancel(job=self._job(options["job"]), actor=actor, reason=options["reason"]))

    def _adopt(self, options: dict[str, Any], actor: Actor) -> None:
        self._print(finetuning_job_adopt(job=self._job(options["job"]), provider_job_id=options["provider_job_id"],
                                         actor=actor, reason=options["reason"]))

    def _sync(self, options: dict[str, Any], actor: Actor) -> None:
        jobs = list(jobs_to_sync()) if options["all"] else [self._job(options["job"])]
        results = [services.finetuning_job_sync(job=job, actor=actor) for job in jobs]
        if self.as_json:
            self.stdout.write(json.dumps([job_summary(job) for job in results] if options["all"] else job_summary(results[0])))
        else:
            for job in results:
                self._print(job)
            if options["all"] and not results:
                self.stdout.write("no job to sync")
        if any(job.status == rules.REFUSED for job in results):
            raise CommandError("the provider refused to answer for a job; its answer is shown above", returncode=REFUSED)

    def _status(self, options: dict[str, Any], actor: Actor) -> None:
        provider = self._provider(options.get("provider"))
        if provider is not None:
            self._provider_listing(provider, actor=actor)
            return
        if options["job"]:
            self._print(self._job(options["job"]), detailed=True)
            return
        if options.get("agent"):
            command_agent(options["agent"])
        jobs = list(jobs_for_agents(agent=options.get("agent"))[: max(1, options["limit"])])
        if self.as_json:
            self.stdout.write(json.dumps([job_summary(job) for job in jobs]))
            return
        if not jobs:
            self.stdout.write("no fine-tuning jobs")
        for job in jobs:
            self._print(job)

    def _provider_listing(self, provider: ProviderAccount, *, actor: Actor) -> None:
        listing = services.finetuning_provider_jobs(provider=provider, actor=actor)
        if self.as_json:
            self.stdout.write(json.dumps([
                {"provider_job_id": item.snapshot.id, "status": item.snapshot.status, "base_model": item.snapshot.base_model,
                 "fine_tuned_model": item.snapshot.fine_tuned_model, "tracked_as": item.job.pk if item.job else None}
                for item in listing
            ]))
            return
        if not listing:
            self.stdout.write(f"provider '{provider.name}' holds no fine-tuning jobs")
        for item in listing:
            tracked = f"job #{item.job.pk} ({item.job.agent.slug})" if item.job else "NOT TRACKED by Genesis"
            self.stdout.write(f"{item.snapshot.id} {item.snapshot.base_model} {item.snapshot.status} — {tracked}")

    # --- output -----------------------------------------------------------------------------------
    def _print(self, job: FineTuningJob, *, detailed: bool = False) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(job_summary(job)))
            return
        cost = job_cost_text(job)
        line = (f"job #{job.pk} {job.agent.slug} {job.base_model} {job.status}"
                f"{' (' + job.provider_job_id + ')' if job.provider_job_id else ''} cost {cost}")
        if job.trained_tokens is not None:
            line += f", {job.trained_tokens} trained tokens"
        if job.fine_tuned_model:
            line += f" → {job.fine_tuned_model}"
        if job.model_version_id:
            line += f" (model version #{job.model_version_id}{', cost on the ledger' if job.cost_recorded_at else ''})"
        self.stdout.write(line)
        if job.last_error:
            self.stdout.write(f"  last error: {job.last_error}")
        if job.provider_answer:
            self.stdout.write(f"  provider's answer (HTTP {job.provider_answer_status}): {job.provider_answer}")
        if detailed:
            for event in job.events:
                self.stdout.write(f"  {event.get('created_at')} {event.get('name')} {json.dumps(event.get('data', {}))}")

    # --- parsing --------------------------------------------------------------------------------------
    def _provider(self, name: str | None) -> ProviderAccount | None:
        if not name:
            return None
        provider = ProviderAccount.objects.filter(name=name).first()
        if provider is None:
            known = ", ".join(ProviderAccount.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"--provider: unknown provider account '{name}'; known: {known}", returncode=USAGE)
        return provider

    def _job(self, reference: str) -> FineTuningJob:
        jobs = FineTuningJob.objects.select_related("agent", "provider")
        job = _by_id_or_provider_id(jobs, reference, provider_id_field="provider_job_id")
        if job is None:
            raise CommandError(f"no fine-tuning job '{reference}' (give its id or the provider's job id)", returncode=USAGE)
        return job

    def _training_file(self, reference: str, *, purpose: str) -> TrainingFile:
        files = TrainingFile.objects.select_related("agent", "provider")
        found = _by_id_or_provider_id(files, reference, provider_id_field="provider_file_id")
        if found is None:
            raise CommandError(f"no uploaded {purpose} file '{reference}' (give its id or the provider's file id)", returncode=USAGE)
        return found

    def _upload_path(self, raw_path: str, *, agent: Agent, purpose: str, actor: Actor,
                     provider: ProviderAccount | None = None, provider_file_id: str = "") -> TrainingFile:
        path = Path(raw_path)
        try:
            stream = path.open("rb")
        except OSError as exc:
            raise CommandError(f"{raw_path}: cannot read it ({exc.strerror})", returncode=USAGE) from None
        with stream:
            return training_files.training_file_upload(agent=agent, content=stream, filename=path.name, purpose=purpose,
                                                       provider=provider, actor=actor, provider_file_id=provider_file_id,
                                                       audit_override_reason=self.audit_override_reason)
