"""`python -m models_app.simulator [options]`: the simulator without Django."""

from __future__ import annotations

import argparse

from .cli import add_simulator_arguments, config_from_arguments
from .server import CannotListen, serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m models_app.simulator", description="Genesis Mistral simulator")
    add_simulator_arguments(parser)
    options = parser.parse_args()
    try:
        config = config_from_arguments(options)
    except ValueError as error:
        parser.error(str(error))  # exits 2, like every usage error
    try:
        serve(config)
    except CannotListen as error:
        if error.usage:
            parser.error(str(error))
        parser.exit(1, f"{parser.prog}: {error}\n")


if __name__ == "__main__":
    main()
