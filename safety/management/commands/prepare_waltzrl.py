"""`manage.py prepare_waltzrl [--adversarial FILE] [--borderline FILE] [--field NAME] [--agent A]
[--judge MODEL] [--target N] [--mix A,B] [--validation F] [--seed N] [--out DIR] [--json]`

Prepares WaltzRL training data: imports the prompt files (a kind without a file uses the built-in
synthetic set), starts a build through the same service as the admin (budget check and hold), runs it
in this process (the task's own function; a worker that also receives the build's message finds it
locked or finished), and writes conversation_agent_{train,valid}.jsonl and
feedback_agent_{train,valid}.jsonl into --out. `--finetune` then starts the Stage-1 fine-tuning job
(the feedback agent) through the fine-tuning budget check.

Exit 0 done; 1 refused (budget, provider), failed, or short of the target (the shortfall is printed);
2 usage (bad flags, unknown agent or user, unreadable file, a file without one usable prompt, an --out
that cannot be written — checked before the build starts, so nothing is built or charged).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from audits.services import dataset_file_path
from costs.budgeting import format_usd
from genesis.commands import command_user, usage_error
from genesis.errors import DomainError, InvalidInput, PermissionDenied
from genesis.permissions import Actor
from models_app.benchmarks.scorers import DEFAULT_JUDGE_MODEL
from models_app.providers import TransientProviderError
from models_app.registry.models import Agent, ModelVersion
from models_app.registry.selectors import baseline_version, live_version
from safety import selectors, services
from safety.models import BuildStatus, PromptKind

USAGE, REFUSED = 2, 1
FILES = ("conversation_agent_train", "conversation_agent_valid", "feedback_agent_train", "feedback_agent_valid")


class Command(BaseCommand):
    help = "Prepare WaltzRL conversation-agent and feedback-agent training files (labelled, balanced, audited)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--adversarial", metavar="FILE", help="JSONL or CSV of harmful prompts (default: built-in set)")
        parser.add_argument("--borderline", metavar="FILE", help="JSONL or CSV of benign borderline prompts (default: built-in set)")
        parser.add_argument("--field", default="prompt", metavar="NAME", help="the field holding the prompt (default prompt)")
        parser.add_argument("--category-field", default="category", metavar="NAME", help="optional category field (default category)")
        parser.add_argument("--source-field", default="source", metavar="NAME", help="optional source field (default source)")
        parser.add_argument("--agent", metavar="A", help="agent whose live (else baseline) model is the conversation agent")
        parser.add_argument("--judge", default=DEFAULT_JUDGE_MODEL, metavar="MODEL", help=f"judge model (default {DEFAULT_JUDGE_MODEL})")
        parser.add_argument("--target", type=int, default=services.DEFAULT_TARGET, metavar="N",
                            help=f"examples per agent's file set, train + valid (default {services.DEFAULT_TARGET}, at most {services.MAX_TARGET})")
        parser.add_argument("--mix", default="50,50", metavar="A,B", help="adversarial,borderline percent (default 50,50)")
        parser.add_argument("--validation", type=float, default=services.DEFAULT_VALIDATION, metavar="F",
                            help="share held out for validation (default 0.1)")
        parser.add_argument("--seed", type=int, default=0, metavar="N")
        parser.add_argument("--out", metavar="DIR",
                            help="where the four files go (default $GENESIS_VAR_DIR/waltzrl/build-<id>, var/ of the project unless set)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--as", dest="as_user", metavar="USERNAME", help="act as this user (permissions, overrides)")
        parser.add_argument("--override-reason", metavar="TEXT", help="start over budget (needs costs.override_budget)")
        parser.add_argument("--finetune", action="store_true", help="then start the Stage-1 (feedback agent) fine-tuning job")

    def handle(self, *args: Any, **options: Any) -> None:
        mix = self._checked_mix(options)
        actor = command_user(options["as_user"])
        agent = self._agent(options["agent"])
        out_dir = self._checked_out(options["out"])
        try:
            prompt_sets = self._prompt_sets(options, actor)
        except (InvalidInput, PermissionDenied) as exc:
            raise usage_error(exc.message) from None
        try:
            build = services.waltz_build_create(
                agent=agent, prompt_sets=prompt_sets, judge_model=options["judge"], target=options["target"], mix=mix,
                validation=options["validation"], seed=options["seed"], actor=actor, via="command: prepare_waltzrl",
                override_reason=options["override_reason"], enqueue=False,
            )
        except InvalidInput as exc:
            raise usage_error(exc.message) from None
        except DomainError as exc:
            self._refused(options, exc.message)
        if not options["json"]:
            self.stderr.write(f"build #{build.pk}: {build.total_items} prompts, estimated {format_usd(build.estimated_cost_usd)}")
        try:
            build = services.waltz_build_execute(build_id=build.pk)
        except TransientProviderError as exc:
            build.refresh_from_db()
            self._stopped(options, f"build #{build.pk} paused: the provider kept failing ({exc}). Its answers so far are "
                                   "kept; a worker resumes it: beat's sweep re-sends it to the default queue within minutes.",
                          build=build)
        out = out_dir if options["out"] else out_dir / f"build-{build.pk}"
        if build.status == BuildStatus.SUCCEEDED:
            self._write_files(build, out)
        job = None
        if options["finetune"] and build.status == BuildStatus.SUCCEEDED:
            try:
                job = services.waltz_build_finetune(build=build, actor=actor, override_reason=options["override_reason"])
            except DomainError as exc:
                self._stopped(options, f"Stage-1 fine-tuning refused: {exc.message}", build=build, out=out)
        summary = selectors.waltz_build_summary(build=build)
        written = build.status == BuildStatus.SUCCEEDED  # a failed build writes no file: none is named
        if options["json"]:
            self.stdout.write(json.dumps({**summary, "files": self._file_paths(out) if written else None,
                                          "finetuning_job": job.pk if job else None}))
        else:
            self.stdout.write(selectors.waltz_build_markdown(build=build))
            if written:
                self.stdout.write(f"files in {out}")
            if job is not None:
                self.stdout.write(f"Stage-1 fine-tuning job #{job.pk} ({job.status})")
        if build.status != BuildStatus.SUCCEEDED:
            self.stderr.write(f"build #{build.pk} failed: {build.error}")
            sys.exit(REFUSED)
        if build.shortfall:
            self.stderr.write(f"short of the target: {build.shortfall}")
            sys.exit(REFUSED)

    @staticmethod
    def _checked_mix(options: dict[str, Any]) -> dict[str, int]:
        """The --mix, once it and --target and --validation are valid; a usage error otherwise."""
        try:
            mix = services.parse_mix(options["mix"])
        except InvalidInput as exc:
            raise usage_error(exc.message) from None
        if not 1 <= options["target"] <= services.MAX_TARGET:
            raise usage_error(f"--target must be between 1 and {services.MAX_TARGET}")
        if not 0 <= options["validation"] <= 0.5:
            raise usage_error("--validation must be between 0 and 0.5")
        return mix

    @staticmethod
    def _checked_out(out: str | None) -> Path:
        """The directory the files go to (the default's parent, waltzrl/ under GENESIS_VAR_DIR — where the
        deployment keeps its files, not the directory the command runs in — when --out is not given),
        created and proven writable now: a usage error before anything is built or charged."""
        directory = Path(out) if out else settings.VAR_DIR / "waltzrl"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            raise usage_error(f"--out: cannot write {directory}: {exc.strerror or exc}") from None
        return directory

    def _refused(self, options: dict[str, Any], message: str) -> NoReturn:
        """Refused before any build was made."""
        self._stopped(options, f"refused: {message}", error=message)

    def _stopped(self, options: dict[str, Any], message: str, *, build: Any = None, out: Path | None = None,
                 error: str | None = None) -> NoReturn:
        """Exit 1, saying why on stderr — and with --json the object on stdout all the same (every exit 0 or 1
        prints it): the build's, or the empty shape when none was made, with `error`."""
        if options["json"]:
            summary = selectors.waltz_build_summary(build=build) if build else selectors.waltz_build_summary_empty()
            self.stdout.write(json.dumps({**summary, "files": self._file_paths(out) if out else None,
                                          "finetuning_job": None, "error": error or message}))
        self.stderr.write(message)
        sys.exit(REFUSED)

    @staticmethod
    def _file_paths(out: Path) -> dict[str, str]:
        return {name: str(out / f"{name}.jsonl") for name in FILES}

    def _agent(self, slug: str | None) -> Agent:
        if slug:
            agent = Agent.objects.filter(slug=slug).first()
            if agent is None:
                raise usage_error(f"--agent: no agent '{slug}' (known: {', '.join(Agent.objects.values_list('slug', flat=True))})")
            return agent
        for agent in Agent.objects.order_by("slug"):
            if live_version(agent=agent) or baseline_version(agent=agent):
                return agent
        if ModelVersion.objects.exists():
            raise usage_error("--agent: name the agent whose model answers the prompts")
        raise usage_error("no agent has a model yet; run seed_demo or register one")

    def _prompt_sets(self, options: dict[str, Any], actor: Actor) -> list[Any]:
        builtin = {prompt_set.kind: prompt_set for prompt_set in services.prompt_sets_builtin()}
        sets = []
        for kind in PromptKind.values:
            path = options[kind]
            if not path:
                sets.append(builtin[kind])
                continue
            try:
                content = Path(path).read_bytes()
            except OSError as exc:
                raise usage_error(f"--{kind}: cannot read {path}: {exc.strerror or exc}") from None
            prompt_set = services.prompt_set_import(
                content=content, name=Path(path).name, kind=kind, field=options["field"],
                category_field=options["category_field"], source_field=options["source_field"], actor=actor,
            )
            if prompt_set.problem_count:
                self.stderr.write(f"{path}: {prompt_set.problem_count} malformed line(s) skipped, "
                                  f"{prompt_set.prompt_count} prompts kept:")
                for problem in prompt_set.problems:
                    self.stderr.write(f"  line {problem['line']}: {problem['detail']}")
            sets.append(prompt_set)
        return sets

    def _write_files(self, build: Any, out: Path) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, dataset in zip(FILES, (build.conversation_train, build.conversation_valid, build.feedback_train,
                                             build.feedback_valid), strict=True):
                target = out / f"{name}.jsonl"
                if dataset is None:
                    target.write_bytes(b"")  # nothing held out (e.g. --validation 0)
                else:
                    shutil.copyfile(dataset_file_path(dataset=dataset), target)
        except OSError as exc:
            raise usage_error(f"--out: cannot write {out}: {exc.strerror or exc}") from None

