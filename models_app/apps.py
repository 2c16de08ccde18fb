from django.apps import AppConfig

from genesis.metrics import register_scrape_collector


class ModelsAppConfig(AppConfig):
    name = "models_app"
    verbose_name = "Model registry"

    def ready(self) -> None:
        # import here: these modules import tables, which Django loads only once the app registry is ready.
        from costs.selectors import register_fine_tuning_jobs_source
        from models_app.benchmarks.metrics import BenchmarkRunsCollector
        from models_app.finetuning.metrics import FineTuningJobsCollector
        from models_app.finetuning.selectors import fine_tuning_job_lines
        from models_app.registry.metrics import ApiKeysCollector

        register_scrape_collector(BenchmarkRunsCollector())
        register_scrape_collector(FineTuningJobsCollector())
        register_scrape_collector(ApiKeysCollector())
        # The cost report's fine-tuning section: costs sits below fine-tuning and cannot read its jobs.
        register_fine_tuning_jobs_source(fine_tuning_job_lines)
