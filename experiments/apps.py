from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Experiments and rollouts"

    def ready(self) -> None:
        # import here: apps.py is imported while the app registry is still loading, and
        # the metrics module reads models (its collectors query the audit trail and rollout state).
        from experiments.metrics import register_metrics

        register_metrics()
