"""HTTP endpoints of the models_app: one Router per domain, combined into `router`."""

from ninja import Router

from models_app.api.benchmarks import router as benchmarks_router
from models_app.api.finetuning import router as finetuning_router
from models_app.api.registry import router as registry_router

router = Router()
router.add_router("", registry_router)
router.add_router("", finetuning_router)
router.add_router("", benchmarks_router)
