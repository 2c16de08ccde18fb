from django.apps import AppConfig


class AuditsConfig(AppConfig):
    name = "audits"
    verbose_name = "Training-data audits"

    def ready(self) -> None:
        # import here: these modules import tables, which Django loads only once the app registry is ready.
        from audits.metrics import register_audit_metrics

        register_audit_metrics()
