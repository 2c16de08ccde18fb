"""Tables of the costs app (see its issue)."""

from django.db import models  # noqa: F401
