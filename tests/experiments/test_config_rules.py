"""The rollout settings in genesis/config/schema.py follow the same rules the experiment services
apply: a stage plan ROLLOUT_STAGES could never complete, or a guardrail alpha that would make the
guardrails meaningless, stops start-up instead of failing at the first experiment."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.rollout_settings import validate_stage_plan
from genesis.config.loader import ConfigError, load_config
from genesis.errors import InvalidInput

MINIMAL = "debug: false\nallowed_hosts: a.example.com\ndatabase_url: ${DATABASE_URL}\n"


def _load(tmp_path: Path, ab_testing: str, **environ: str):
    (tmp_path / "dev.yaml").write_text(MINIMAL + "ab_testing:\n" + ab_testing)
    return load_config(env_name="dev", environ={"DATABASE_URL": "sqlite:///x", **environ}, config_dir=tmp_path)


@pytest.mark.parametrize("stages", ["100", "50"])
def test_a_single_stage_plan_stops_start_up_and_is_refused_for_an_experiment(tmp_path, stages):
    with pytest.raises(ConfigError, match=r"ab_testing.stages \(from ROLLOUT_STAGES\): .*at least two stages"):
        _load(tmp_path, "  stages: ${ROLLOUT_STAGES}\n", ROLLOUT_STAGES=stages)
    with pytest.raises(InvalidInput, match="at least two stages"):
        validate_stage_plan([int(stages)])


def test_the_default_plan_satisfies_both(tmp_path):
    assert _load(tmp_path, "  min_stage_hours: 48\n").ab_testing.stages == validate_stage_plan([10, 25, 50, 100]) == [10, 25, 50, 100]


@pytest.mark.parametrize("alpha", [0.5, 0.7])
def test_a_guardrail_alpha_of_one_half_or_more_stops_start_up(tmp_path, alpha):
    # A coin flip would roll back a good candidate as often: no guardrail at all.
    with pytest.raises(ConfigError, match="ab_testing.guardrail_alpha"):
        _load(tmp_path, f"  guardrail_alpha: {alpha}\n")


def test_a_guardrail_alpha_below_one_half_loads(tmp_path):
    assert _load(tmp_path, "  guardrail_alpha: 0.1\n").ab_testing.guardrail_alpha == 0.1


@pytest.mark.parametrize("srm_alpha", [0, 1, 1.5])
def test_an_srm_alpha_outside_zero_to_one_stops_start_up(tmp_path, srm_alpha):
    with pytest.raises(ConfigError, match="ab_testing.srm_alpha"):
        _load(tmp_path, f"  srm_alpha: {srm_alpha}\n")
