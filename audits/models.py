"""Tables of the audits app (see its issue)."""

from django.db import models  # noqa: F401
