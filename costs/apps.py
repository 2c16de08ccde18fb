from django.apps import AppConfig


class CostsConfig(AppConfig):
    name = "costs"
    verbose_name = "Costs and budgets"

    def ready(self) -> None:
        from costs.metrics import register_collector  # import here: it reads models, loaded only once apps are ready

        register_collector()
