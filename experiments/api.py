"""HTTP endpoints of the experiments app, mounted under /api/v1 by genesis/api.py."""

from ninja import Router

router = Router(tags=["experiments"])
