"""The YAML configuration loader: expansion, defaults, and every error naming file and key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genesis.config.loader import (
    CONFIG_DIR,
    ConfigError,
    expand_variables,
    load_config,
    normalise_env_name,
    validate_config,
)
from genesis.config.schema import ProviderHost

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
debug: ${GENESIS_DEBUG:-false}
allowed_hosts: ${HOSTS:-a.example.com,b.example.com}
database_url: ${DATABASE_URL}
"""


def write(tmp_path: Path, text: str, name: str = "dev") -> Path:
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def test_expansion_uses_the_environment_then_the_default():
    raw = {"a": "${X:-one}", "b": ["pre-${Y:-two}-post"], "c": {"d": "${X}"}}
    assert expand_variables(raw, environ={"X": "set"}, file="f.yaml") == {"a": "set", "b": ["pre-two-post"], "c": {"d": "set"}}


def test_empty_variable_counts_as_unset_for_the_default():
    assert expand_variables("${X:-fallback}", environ={"X": ""}, file="f.yaml") == "fallback"


def test_missing_required_variable_names_file_key_and_variable():
    with pytest.raises(ConfigError) as exc:
        expand_variables({"db": {"url": "${DATABASE_URL}"}}, environ={}, file="genesis/config/prod.yaml")
    assert str(exc.value) == "genesis/config/prod.yaml: db.url: environment variable DATABASE_URL is required but not set"


def test_values_are_coerced_by_the_schema(tmp_path):
    text = MINIMAL + "ab_testing:\n  stages: ${ROLLOUT_STAGES:-10,25,50,100}\n  min_stage_hours: ${H:-48}\n"
    config = load_config(env_name="dev", environ={"DATABASE_URL": "sqlite:///x", "ROLLOUT_STAGES": "5,20,100"},
                         config_dir=write(tmp_path, text))
    assert config.debug is False
    assert config.allowed_hosts == ["a.example.com", "b.example.com"]
    assert config.ab_testing.stages == [5, 20, 100]
    assert config.ab_testing.min_stage_hours == 48.0
    assert config.ab_testing.min_samples_per_arm == 150  # schema default
    assert config.costs.thresholds == [25, 50, 83]


def test_unknown_key_is_named(tmp_path):
    text = MINIMAL + "ab_testing:\n  min_stage_hour: 48\n"
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={"DATABASE_URL": "x"}, config_dir=write(tmp_path, text))
    assert "dev.yaml: ab_testing.min_stage_hour: unknown key" in str(exc.value)


def test_wrong_type_is_named_with_the_value(tmp_path):
    text = MINIMAL + "ab_testing:\n  min_stage_hours: soon\n"
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={"DATABASE_URL": "x"}, config_dir=write(tmp_path, text))
    assert "dev.yaml: ab_testing.min_stage_hours:" in str(exc.value)
    assert "'soon'" in str(exc.value)


def test_missing_required_key_is_named(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={}, config_dir=write(tmp_path, "debug: true\nallowed_hosts: [x]\n"))
    assert "dev.yaml: database_url: required key is missing" in str(exc.value)


def test_yaml_syntax_error_names_the_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={}, config_dir=write(tmp_path, "debug: [unclosed\n"))
    assert "dev.yaml: not valid YAML" in str(exc.value)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="dev.yaml: the top level must be a mapping"):
        load_config(env_name="dev", environ={}, config_dir=write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize(("raw", "expected"), [("dev", "dev"), ("development", "dev"), ("PROD", "production"), ("staging", "staging")])
def test_environment_aliases(raw, expected):
    assert normalise_env_name(raw) == expected


def test_unknown_environment_is_refused():
    with pytest.raises(ConfigError, match="GENESIS_ENV='qa' is not one of"):
        normalise_env_name("qa")


@pytest.mark.parametrize("env_name", ["dev", "staging", "production"])
def test_shipped_files_are_valid(env_name):
    environ = {"DATABASE_URL": "postgres://x/y", "REDIS_URL": "redis://x", "GENESIS_ALLOWED_HOSTS": "genesis.example.com"}
    config = load_config(env_name=env_name, environ=environ)
    assert config.ab_testing.stages == [10, 25, 50, 100]
    assert config.benchmarks.min_relative_improvement == 0.08
    assert config.debug is (env_name == "dev")


def test_the_benchmark_minimum_of_cases_comes_from_the_environment_and_must_be_positive():
    environ = {"DATABASE_URL": "postgres://x/y"}
    assert load_config(env_name="dev", environ=environ).benchmarks.min_cases == 20
    assert load_config(env_name="dev", environ={**environ, "BENCHMARK_MIN_CASES": "50"}).benchmarks.min_cases == 50
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={**environ, "BENCHMARK_MIN_CASES": "0"})
    assert "dev.yaml: benchmarks.min_cases (from BENCHMARK_MIN_CASES):" in str(exc.value)


def test_provider_hosts_come_from_the_environment_and_a_malformed_entry_stops_start_up():
    environ = {"DATABASE_URL": "postgres://x/y"}
    assert load_config(env_name="dev", environ=environ).providers.hosts == []
    hosts = "VLLM_API_KEY=vllm.internal:8000, TOGETHER_API_KEY=API.together.xyz,localhost:11434,GENESIS_SIMULATOR_API_KEY=[::1]:*"
    assert load_config(env_name="dev", environ={**environ, "GENESIS_PROVIDER_HOSTS": hosts}).providers.hosts == [
        ProviderHost("VLLM_API_KEY", "vllm.internal", 8000), ProviderHost("TOGETHER_API_KEY", "api.together.xyz", 443),
        ProviderHost("", "localhost", 11434), ProviderHost("GENESIS_SIMULATOR_API_KEY", "::1", None),
    ]
    for entry, problem in [("DATABASE_URL=db.internal", "'DATABASE_URL' is not an API key variable"),
                           ("VLLM_API_KEY=https://vllm.internal", "without a scheme or a path"),
                           ("VLLM_API_KEY=vllm.internal/v1", "without a scheme or a path"),
                           ("VLLM_API_KEY=vllm.internal:0", "expected NAME_API_KEY=host[:port]")]:
        with pytest.raises(ConfigError) as exc:
            load_config(env_name="production", environ={**environ, "REDIS_URL": "redis://x", "GENESIS_ALLOWED_HOSTS": "a",
                                                        "GENESIS_PROVIDER_HOSTS": f"localhost:11434,{entry}"})
        assert "production.yaml: providers.hosts.1 (from GENESIS_PROVIDER_HOSTS): " in str(exc.value) and problem in str(exc.value)



@pytest.mark.parametrize("entry", ["VLLM_API_KEY=ops:Hunter2-pw@vllm.internal:8000", "VLLM_API_KEY=:Hunter2-pw@vllm.internal",
                                   "https://ops:Hunter2-pw@vllm.internal", "VLLM_API_KEY=vllm.internal/v1?token=Hunter2-pw",
                                   # Second reviewer: a password may hold any of these; a comma splits the list.
                                   *(f"VLLM_API_KEY=ops:Hun{char}ter2-pw@vllm.internal" for char in "/?#' ,")])
def test_a_provider_host_entry_with_a_password_is_refused_without_showing_it(entry):
    # The refusal stops start-up and lands in the process's log: the entry is quoted, its password masked.
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={"DATABASE_URL": "postgres://x/y", "GENESIS_PROVIDER_HOSTS": entry})
    assert "providers.hosts" in str(exc.value) and "(from GENESIS_PROVIDER_HOSTS): " in str(exc.value)
    assert "vllm.internal" in str(exc.value) and "Hunter2" not in str(exc.value) and "ter2" not in str(exc.value)
    assert str(exc.value).count("vllm.internal") == 1  # quoted once, by the loader


@pytest.mark.parametrize("override", [{"database_url": ["postgres://genesis:Hunter2-pw@db/genesis"]},
                                      {"redis_url": {"u": "redis://:Hunter2-pw@r:6379/0"}},
                                      {"providers": {"hosts": {"VLLM_API_KEY": "u:Hunter2-pw@h"}}}])
def test_a_refused_list_or_mapping_is_quoted_with_its_passwords_masked(override):
    # Third look: the masking of a quoted value applied to strings only.
    raw = {**yaml.safe_load((CONFIG_DIR / "dev.yaml").read_text()), **override}
    with pytest.raises(ConfigError) as exc:
        validate_config(raw, file="dev.yaml")
    assert "Hunter2" not in str(exc.value) and "(got " in str(exc.value)

def run_django(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GENESIS_", "DJANGO_"))}
    environ.update(env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=60)


PRODUCTION = {
    "GENESIS_ENV": "production",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "GENESIS_ALLOWED_HOSTS": "genesis.example.com",
}


def test_production_without_secret_key_refuses_to_start():
    result = run_django("check", **PRODUCTION)
    assert result.returncode != 0
    assert "GENESIS_SECRET_KEY" in result.stderr
    assert "refuses to start without a secret key" in result.stderr


def test_production_with_debug_refuses_to_start():
    result = run_django("check", **PRODUCTION, GENESIS_SECRET_KEY="x" * 60, GENESIS_DEBUG="true")
    assert result.returncode != 0
    assert "production refuses to start with DEBUG on" in result.stderr


def test_production_without_allowed_hosts_refuses_to_start():
    env = {**PRODUCTION, "GENESIS_SECRET_KEY": "k" * 60}
    del env["GENESIS_ALLOWED_HOSTS"]
    result = run_django("check", **env)
    assert result.returncode != 0
    assert "allowed_hosts: environment variable GENESIS_ALLOWED_HOSTS is required" in result.stderr


def test_check_deploy_is_clean_under_production_settings():
    secret = "p8Vq3nX1-Lk0zR7t_Yw2mB9sC4dE6fG5hJ8kL1nP3qR7sT0uV2wX4yZ6aB8cD0eF"
    result = run_django("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION, GENESIS_SECRET_KEY=secret)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("stages", "message"),
    [("10,50,25,100", "percents must increase strictly"), ("10,25,50", "the last stage must be 100"),
     ("0,100", "between 1 and 100"), ("10,abc,100", "valid integer")],
)
def test_bad_rollout_stages_stop_start_up_naming_the_key(tmp_path, stages, message):
    text = MINIMAL + "ab_testing:\n  stages: ${ROLLOUT_STAGES}\n"
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={"DATABASE_URL": "x", "ROLLOUT_STAGES": stages}, config_dir=write(tmp_path, text))
    assert "dev.yaml: ab_testing.stages" in str(exc.value)
    assert message in str(exc.value)


def test_bad_budget_thresholds_are_refused(tmp_path):
    text = MINIMAL + "costs:\n  thresholds: ${BUDGET_THRESHOLDS}\n"
    with pytest.raises(ConfigError, match=r"dev.yaml: costs.thresholds \(from BUDGET_THRESHOLDS\): .*between 1 and 100"):
        load_config(env_name="dev", environ={"DATABASE_URL": "x", "BUDGET_THRESHOLDS": "25,50,130"}, config_dir=write(tmp_path, text))


def test_staging_also_refuses_the_development_secret_key():
    env = {**PRODUCTION, "GENESIS_ENV": "staging"}
    result = run_django("check", **env)
    assert result.returncode != 0
    assert "staging refuses to start without a secret key" in result.stderr


def test_json_log_lines_are_valid_json_with_the_traceback():
    import json
    import logging

    from genesis.logging import JsonFormatter

    try:
        raise ValueError('bad "value"\nsecond line')
    except ValueError:
        record = logging.LogRecord("genesis", logging.ERROR, __file__, 1, 'failed: %s', ('quote " inside',), sys.exc_info())
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == 'failed: quote " inside'
    assert "ValueError" in entry["exception"]


def test_a_missing_metrics_folder_is_made_at_start(tmp_path):
    # Was: a gunicorn worker died at boot (FileNotFoundError: …/counter_1668.db) when the folder named
    # by PROMETHEUS_MULTIPROC_DIR did not exist, e.g. a tmpfs folder after a reboot.
    import subprocess
    import sys

    from tests.conftest import ROOT, child_environment

    folder = tmp_path / "gone-after-reboot" / "genesis-metrics"
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=child_environment(PROMETHEUS_MULTIPROC_DIR=str(folder)))
    assert result.returncode == 0, result.stderr
    assert folder.is_dir()


def test_an_empty_metrics_folder_variable_is_unset_and_writes_no_files_into_the_working_directory(tmp_path):
    # Was: PROMETHEUS_MULTIPROC_DIR="" put prometheus_client in multiprocess mode (it checks only that the
    # variable is there), which wrote counter_<pid>.db files into the working directory — a soak found them
    # in the checkout — while /metrics, reading the empty variable as unset, served none of them.
    import subprocess
    import sys

    from tests.conftest import ROOT, child_environment

    count = "from prometheus_client import Counter; Counter('genesis_probe_total', 'a probe').inc()"
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c", count], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=child_environment(PROMETHEUS_MULTIPROC_DIR=""))
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_environment_variable_the_settings_read_is_in_the_readmes_tables() -> None:
    # GENESIS_USE_FINETUNED, GENESIS_FALLBACK_ENABLED and BENCHMARK_CONCURRENCY were read into config keys
    # nothing used, and were in no table; GENESIS_SSL_REDIRECT and GENESIS_VAR_DIR were read and in no
    # table. GENESIS_ENV and PROMETHEUS_MULTIPROC_DIR have paragraphs of their own.
    import re

    read = set()
    for path in [*sorted((ROOT / "genesis" / "config").glob("*.yaml")), ROOT / "genesis" / "settings.py"]:
        text = path.read_text()
        read |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
        read |= set(re.findall(r"os\.environ(?:\.get)?[(\[]\"([A-Z][A-Z0-9_]*)\"", text))
        read |= set(re.findall(r"\b_env_\w+\(\"([A-Z][A-Z0-9_]*)\"", text))  # settings' typed readers, e.g. _env_days
    configuration = (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    tabled = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", configuration, re.MULTILINE))
    assert read - tabled == {"GENESIS_ENV", "PROMETHEUS_MULTIPROC_DIR"}


def test_the_database_connection_age_comes_from_the_environment_and_a_malformed_one_stops_start_up() -> None:
    from django.conf import settings

    from tests.conftest import ROOT, child_environment

    if settings.USING_SQLITE:
        pytest.skip("the connection age applies to PostgreSQL")

    def run(value: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", "from django.db import connection; print(connection.settings_dict['CONN_MAX_AGE'])"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, env=child_environment(GENESIS_DB_CONN_MAX_AGE=value))

    closing = run("0")
    assert closing.returncode == 0, closing.stderr
    assert closing.stdout.strip().splitlines()[-1] == "0"
    malformed = run("1m")
    assert malformed.returncode != 0 and "GENESIS_DB_CONN_MAX_AGE: '1m' is not a whole number of seconds" in malformed.stderr


@pytest.mark.parametrize(("variable", "unit"), [("GENESIS_DB_CONN_MAX_AGE", "seconds"), ("GENESIS_RETAIN_LIVE_OUTCOMES_DAYS", "days")])
def test_a_unicode_digit_in_a_whole_number_variable_stops_start_up_naming_the_variable(variable: str, unit: str) -> None:
    # str.isdigit() takes '²' (a digit to Unicode), which int() refuses: start-up died on a bare ValueError.
    from tests.conftest import ROOT, child_environment

    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=child_environment(**{variable: "²"}))
    assert done.returncode != 0
    assert f"{variable}: '²' is not a whole number of {unit}" in done.stderr, done.stderr[-2000:]


def test_a_time_zone_that_does_not_exist_stops_start_up_naming_the_key(tmp_path):
    """Calendar review: `time_zone` sets what a budget's month and day, the daily report's day and
    beat's hours are; a misspelt zone was taken by the schema and Django then stopped with
    "Incorrect timezone setting", naming neither the file nor the key."""
    config = load_config(env_name="dev", environ={"DATABASE_URL": "x"}, config_dir=write(tmp_path, MINIMAL + "time_zone: Europe/Paris\n"))
    assert config.time_zone == "Europe/Paris"
    for wrong in ("Europe/Pariss", "CET/../UTC", ""):
        with pytest.raises(ConfigError, match=r"dev\.yaml: time_zone: .*not a time zone"):
            load_config(env_name="dev", environ={"DATABASE_URL": "x"}, config_dir=write(tmp_path, MINIMAL + f"time_zone: '{wrong}'\n"))


def test_a_refused_value_names_the_environment_variable_it_came_from(tmp_path):
    # The person set ROLLOUT_MIN_SAMPLES_PER_ARM, not a key of dev.yaml: the message named only the key.
    text = MINIMAL + "ab_testing:\n  stages: ${ROLLOUT_STAGES:-10,100}\n  min_samples_per_arm: ${ROLLOUT_MIN_SAMPLES_PER_ARM:-150}\n"
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={"DATABASE_URL": "x", "ROLLOUT_STAGES": "10,abc,100",
                                             "ROLLOUT_MIN_SAMPLES_PER_ARM": "0"}, config_dir=write(tmp_path, text))
    message = str(exc.value)
    assert "ab_testing.min_samples_per_arm (from ROLLOUT_MIN_SAMPLES_PER_ARM): " in message
    assert "ab_testing.stages.1 (from ROLLOUT_STAGES): " in message  # an item of the list the variable held
    # A variable that is one item of a YAML list is named too.
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={"DATABASE_URL": "x", "SECOND_STAGE": "abc"},
                    config_dir=write(tmp_path, MINIMAL + "ab_testing:\n  stages: [10, '${SECOND_STAGE}', 100]\n"))
    assert "ab_testing.stages.1 (from SECOND_STAGE): " in str(exc.value)
    # A default the file gives is no variable the person set: nothing is named.
    with pytest.raises(ConfigError) as exc:
        load_config(env_name="dev", environ={"DATABASE_URL": "x"},
                    config_dir=write(tmp_path, MINIMAL + "ab_testing:\n  min_samples_per_arm: ${ROLLOUT_MIN_SAMPLES_PER_ARM:-3}\n"))
    assert "ab_testing.min_samples_per_arm: " in str(exc.value) and "from" not in str(exc.value)


def test_a_command_refused_by_the_configuration_says_so_in_one_line_not_a_traceback():
    result = run_django("rollout_models", "--agent", "qa_agent", "--status", "--as", "admin",
                        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test", ROLLOUT_MIN_SAMPLES_PER_ARM="0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "genesis: the configuration is refused: genesis/config/dev.yaml: ab_testing.min_samples_per_arm "
        "(from ROLLOUT_MIN_SAMPLES_PER_ARM): Input should be greater than or equal to 20 (got '0')"
    ], result.stderr


@pytest.mark.parametrize("argv", [["--version"], ["help"]])
def test_help_and_version_still_answer_when_the_configuration_is_refused(argv):
    # Django answers them without settings (help lists its own commands and quotes the refusal).
    result = run_django(*argv, ROLLOUT_MIN_SAMPLES_PER_ARM="0")
    assert result.returncode == 0, result.stderr
    if argv == ["help"]:
        assert "ROLLOUT_MIN_SAMPLES_PER_ARM" in result.stdout + result.stderr
    else:
        assert result.stdout.strip().startswith("5.2.")
