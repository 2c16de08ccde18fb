"""Tables of the models_app: the registry (registry.py), benchmarks and fine-tuning jobs each in a
module of their own, all re-exported here so `from models_app.models import X` works for every table."""

from models_app.models.registry import (  # noqa: F401
    Agent,
    ApiKey,
    ModelKind,
    ModelStatus,
    ModelVersion,
    ProviderAccount,
    ProviderKind,
)
from models_app.models.benchmarks import (  # noqa: F401, E402
    BenchmarkCase,
    BenchmarkChunk,
    BenchmarkChunkStatus,
    BenchmarkResult,
    BenchmarkRun,
    BenchmarkRunStatus,
    BenchmarkSuite,
    BenchmarkUnscoredAnswer,
    BenchmarkVerdict,
    BenchmarkVerdictOverride,
)
from models_app.models.finetuning import (  # noqa: F401, E402
    FineTuningJob,
    FineTuningStatus,
    TrainingFile,
    TrainingFilePurpose,
)
