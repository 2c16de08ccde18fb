"""What the launch pages read of each agent's chain — candidate versions, the live version, jobs,
benchmark runs, experiments with their stages, pending requests and rollbacks — each kind of row read
once for all the agents shown (launch/selectors.py builds the rows from it), so a board of twenty
agents costs the queries of one (tests/launch/test_query_counts.py)."""

from __future__ import annotations

from dataclasses import dataclass

from experiments import selectors as experiment_selectors
from experiments.models import ACTIVE_STATUSES, Experiment, ExperimentEvent, ExperimentStage, StageApproval
from models_app.benchmarks.models import BenchmarkRun
from models_app.benchmarks.selectors import with_verdict_facts
from models_app.finetuning import rules as finetuning_rules
from models_app.finetuning.models import FineTuningJob
from models_app.registry.models import Agent, ModelKind, ModelStatus, ModelVersion
from models_app.registry.selectors import CANDIDATE_STATUSES


@dataclass
class Chains:
    """The agents' rows of each kind, newest first, by agent, candidate or experiment id. Each row of
    a page picks its own from them (launch.selectors.agent_candidate's rule and the others', applied to
    these lists)."""

    candidate_versions: dict[int, list[ModelVersion]]  # agent id → its fine-tuned candidates
    live: dict[int, ModelVersion]  # agent id → its live version
    experiments: dict[int, list[Experiment]]  # agent id → all its experiments
    stages: dict[int, list[ExperimentStage]]  # experiment id → its stages by index
    pending: dict[int, StageApproval]  # experiment id → its pending request
    rollbacks: dict[int, ExperimentEvent]  # experiment id → its rollback's entry
    jobs: dict[int | None, FineTuningJob]  # candidate id → the job that produced it
    jobs_in_flight: dict[int, list[FineTuningJob]]  # agent id → its jobs in flight
    runs: dict[int, list[BenchmarkRun]]  # candidate id → its benchmark runs

    @classmethod
    def of(cls, agents: list[Agent]) -> Chains:
        candidate_versions: dict[int, list[ModelVersion]] = {}
        for version in (ModelVersion.objects.filter(agent__in=agents, kind=ModelKind.FINE_TUNED, status__in=CANDIDATE_STATUSES)
                        .select_related("provider", "agent").order_by("-created_at", "-pk")):
            candidate_versions.setdefault(version.agent_id, []).append(version)
        live: dict[int, ModelVersion] = {}
        for version in ModelVersion.objects.filter(agent__in=agents, status=ModelStatus.LIVE).select_related("provider").order_by("-created_at"):
            live.setdefault(version.agent_id, version)
        experiments: dict[int, list[Experiment]] = {}
        for experiment in (Experiment.objects.filter(agent__in=agents)
                           .select_related("agent", "current_stage", "treatment__provider", "treatment__agent", "control__provider",
                                           "started_by")
                           .order_by("-created_at", "-pk")):
            experiments.setdefault(experiment.agent_id, []).append(experiment)
        every_experiment = [experiment for rows in experiments.values() for experiment in rows]
        stages: dict[int, list[ExperimentStage]] = {}
        for stage in ExperimentStage.objects.filter(experiment__in=every_experiment).order_by("experiment", "index"):
            stages.setdefault(stage.experiment_id, []).append(stage)
        chain = cls(candidate_versions=candidate_versions, live=live, experiments=experiments, stages=stages,
                    pending=experiment_selectors.pending_approvals(experiments=every_experiment),
                    rollbacks=experiment_selectors.rollback_events(experiments=every_experiment),
                    jobs={}, jobs_in_flight={}, runs={})
        candidates = [candidate for candidate in (chain.candidate(agent) for agent in agents) if candidate is not None]
        for job in (FineTuningJob.objects.filter(model_version__in=candidates)
                    .select_related("training_file__dataset__latest_audit", "validation_file__dataset__latest_audit", "provider")
                    .order_by("-created_at")):
            chain.jobs.setdefault(job.model_version_id, job)
        for job in FineTuningJob.objects.filter(agent__in=agents, status__in=finetuning_rules.MOVING_STATUSES).order_by("-created_at"):
            chain.jobs_in_flight.setdefault(job.agent_id, []).append(job)
        for run in (with_verdict_facts(BenchmarkRun.objects.filter(candidate__in=candidates)
                                       .select_related("suite__agent", "baseline", "candidate"))
                    .order_by("-created_at", "-pk")):
            chain.runs.setdefault(run.candidate_id, []).append(run)
        return chain

    def _active(self, agent: Agent) -> Experiment | None:
        return next((experiment for experiment in self.experiments.get(agent.pk, []) if experiment.status in ACTIVE_STATUSES), None)

    def candidate(self, agent: Agent) -> ModelVersion | None:
        """agent_candidate of the agent: its running or paused experiment's treatment, else its newest
        fine-tuned candidate."""
        active = self._active(agent)
        if active is not None:
            return active.treatment
        versions = self.candidate_versions.get(agent.pk)
        return versions[0] if versions else None

    def row_experiment(self, agent: Agent, *, candidate: ModelVersion | None) -> Experiment | None:
        """The experiment the row shows: the running or paused one, else the candidate's newest, else
        the agent's newest."""
        experiments = self.experiments.get(agent.pk, [])
        return (
            self._active(agent)
            or (next((experiment for experiment in experiments if experiment.treatment_id == candidate.pk), None) if candidate else None)
            or (experiments[0] if experiments else None)
        )
