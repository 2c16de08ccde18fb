"""A Mistral API simulator that the real `mistralai` SDK talks to over HTTP (no Django here).

    server, base_url = start_in_thread(SimulatorConfig(port=0, job_seconds=1))
    ...
    stop(server)

See markers.py for how benchmark prompts carry their expected answer (the quality knob).
"""

from .catalog import BASE_MODELS, MINIMUM_JOB_FEE_USD, base_model_of, is_servable, training_cost_usd
from .config import DEFAULT_API_KEY, DEFAULT_QUALITY, SimulatorConfig, default_api_keys, parse_quality_spec
from .markers import AnswerKey, format_answer_marker, parse_answer_marker, strip_answer_markers
from .responder import accuracy_for, count_tokens
from .server import SimulatorHTTPServer, serve, start_in_thread, stop

__all__ = [
    "BASE_MODELS",
    "DEFAULT_API_KEY",
    "DEFAULT_QUALITY",
    "MINIMUM_JOB_FEE_USD",
    "AnswerKey",
    "SimulatorConfig",
    "SimulatorHTTPServer",
    "accuracy_for",
    "base_model_of",
    "count_tokens",
    "default_api_keys",
    "format_answer_marker",
    "is_servable",
    "parse_answer_marker",
    "parse_quality_spec",
    "serve",
    "start_in_thread",
    "stop",
    "strip_answer_markers",
    "training_cost_usd",
]
