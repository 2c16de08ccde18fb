"""Django's admin autodiscovery imports `<app>.admin`: importing the domains' admin modules registers
their pages — and the project's User admin (genesis/admin_users.py: a person in the record is
deactivated, not deleted), since genesis is no Django app of its own."""

from genesis import admin_users  # noqa: F401
from models_app.benchmarks import admin as benchmarks  # noqa: F401
from models_app.finetuning import admin as finetuning  # noqa: F401
from models_app.registry import admin as registry  # noqa: F401
