from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    name = "models_app"
    verbose_name = "Model registry"

    def ready(self) -> None:
        # import here: the collectors read tables, which Django loads only once the app registry is ready.
        from models_app.benchmarks.metrics import BenchmarkRunsCollector
        from models_app.finetuning.metrics import FineTuningJobsCollector

        from genesis.metrics import register_scrape_collector

        register_scrape_collector(BenchmarkRunsCollector())
        register_scrape_collector(FineTuningJobsCollector())
