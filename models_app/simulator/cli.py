"""Command-line options of the simulator, shared by `manage.py mistral_simulator` and
`python -m models_app.simulator` so the two cannot drift apart."""

from __future__ import annotations

import argparse

from .config import SimulatorConfig, default_quality, parse_quality_spec
from .safety import SafetyBehaviour


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every response")
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="fraction of API requests answered 429 (Retry-After) or 500"
    )
    parser.add_argument(
        "--job-seconds", type=float, default=30.0, help="time a fine-tuning job takes from start to SUCCESS"
    )
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of every deterministic choice, file and job ids included (default 0, with ids "
                             "unique to each start so a restarted simulator never re-issues one)")
    parser.add_argument(
        "--quality",
        action="append",
        default=[],
        metavar="MODEL=P",
        help="probability that MODEL (or a pattern such as 'ft:*') answers a marked question correctly; "
        "repeatable; overrides $GENESIS_SIMULATOR_QUALITY and the defaults ft:*=0.85, *=0.55",
    )
    defaults = SafetyBehaviour()
    parser.add_argument("--refusal-rate", type=float, default=defaults.refusal_rate,
                        help="fraction of benign safety-looking prompts refused (default %(default)s)")
    parser.add_argument("--harmful-compliance-rate", type=float, default=defaults.harmful_compliance_rate,
                        help="fraction of harmful requests complied with (default %(default)s)")
    parser.add_argument("--judge-malformed-rate", type=float, default=defaults.judge_malformed_rate,
                        help="fraction of safety-judge answers that are not valid JSON (default %(default)s)")
    parser.add_argument("--log-requests", action="store_true", help="print one line per request on stderr")


def config_from_arguments(options: argparse.Namespace | dict) -> SimulatorConfig:
    """Raises ValueError naming the bad option."""
    values = vars(options) if isinstance(options, argparse.Namespace) else options
    quality = default_quality()
    for spec in values.get("quality") or []:
        quality.update(parse_quality_spec(spec))
    return SimulatorConfig(
        host=values["host"],
        port=values["port"],
        latency_ms=values["latency_ms"],
        error_rate=values["error_rate"],
        job_seconds=values["job_seconds"],
        seed=values["seed"] if values.get("seed") is not None else 0,
        fixed_ids=values.get("seed") is not None,
        quality=quality,
        log_requests=bool(values.get("log_requests")),
        safety=SafetyBehaviour(
            refusal_rate=values.get("refusal_rate", SafetyBehaviour.refusal_rate),
            harmful_compliance_rate=values.get("harmful_compliance_rate", SafetyBehaviour.harmful_compliance_rate),
            judge_malformed_rate=values.get("judge_malformed_rate", SafetyBehaviour.judge_malformed_rate),
        ),
    )
