"""`python -m models_app.simulator [options]`: the simulator without Django."""

from __future__ import annotations

import argparse

from .cli import add_simulator_arguments, config_from_arguments
from .server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m models_app.simulator", description="Genesis Mistral simulator")
    add_simulator_arguments(parser)
    options = parser.parse_args()
    try:
        config = config_from_arguments(options)
    except ValueError as error:
        parser.error(str(error))  # exits 2, like every usage error
    serve(config)


if __name__ == "__main__":
    main()
