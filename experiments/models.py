"""Tables of the experiments app (see its issue)."""

from django.db import models  # noqa: F401
