"""gunicorn reads this file from the directory it starts in (the project's): its own lines — start, workers
booting and dying, timeouts — in the format and at the level every other Genesis process logs in
(GENESIS_LOG_FORMAT, GENESIS_LOG_LEVEL; genesis/logging.py), not gunicorn's own text."""

import os

from genesis.config.loader import load_config, normalise_env_name
from genesis.logging import logging_config

_config = load_config(env_name=normalise_env_name(os.environ.get("GENESIS_ENV", "dev"))).logging
logconfig_dict = logging_config(level=_config.level, format=_config.format)
