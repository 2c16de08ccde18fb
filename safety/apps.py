from django.apps import AppConfig


class SafetyConfig(AppConfig):
    name = "safety"
    verbose_name = "Safety data (WaltzRL)"

    def ready(self) -> None:
        # import here: these modules import tables, which Django loads only once the app registry is ready.
        from safety.metrics import register_safety_metrics

        register_safety_metrics()
