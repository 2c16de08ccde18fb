"""HTTP endpoints of the costs app, mounted under /api/v1 by genesis/api.py."""

from ninja import Router

router = Router(tags=["costs"])
