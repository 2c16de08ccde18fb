from django.apps import AppConfig


class LaunchConfig(AppConfig):
    """The launch console: reads across every app (top of the dependency order), writes nothing of
    its own — its buttons call the other apps' services."""

    name = "launch"
    verbose_name = "Launch console"
    default_auto_field = "django.db.models.BigAutoField"
