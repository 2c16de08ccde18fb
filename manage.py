#!/usr/bin/env python
"""Django's command-line entry point for Genesis."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)  # `help` and `--version` answer without settings, as Django's do
    except ImproperlyConfigured as refused:
        # genesis/settings.py's refusal names the file, the key and the environment variable to change;
        # the traceback through importlib above it said nothing more. Exit 1: not a usage error.
        sys.exit(f"genesis: the configuration is refused: {refused}")


if __name__ == "__main__":
    main()
