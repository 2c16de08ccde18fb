from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Experiments and rollouts"

    def ready(self) -> None:
        from experiments.metrics import register_metrics

        register_metrics()
