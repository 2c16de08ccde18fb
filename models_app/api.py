"""HTTP endpoints of the models_app: one Router per domain, combined into `router` (mounted by
genesis/api.py)."""

from ninja import Router

from models_app.benchmarks.api import router as benchmarks_router
from models_app.finetuning.api import router as finetuning_router
from models_app.registry.api import router as registry_router

router = Router()
router.add_router("", registry_router)
router.add_router("", finetuning_router)
router.add_router("", benchmarks_router)
