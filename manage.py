#!/usr/bin/env python
"""Django's command-line entry point for Genesis."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS  # noqa: B018 — reads genesis/settings.py, which checks the configuration
    except ImproperlyConfigured as refused:
        # Its message names the file, the key and the environment variable to change; the traceback
        # through importlib that Django would print above it says nothing more. Exit 1: not a usage error.
        sys.exit(f"genesis: the configuration is refused: {refused}")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
