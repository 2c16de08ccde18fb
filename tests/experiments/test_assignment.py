"""Assignment: GrowthBook hash v2, determinism, monotone stages, independent experiments, the split."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from experiments.assignment import (
    BUCKET_COUNT,
    assign_variant,
    bucket,
    fnv1a32,
    new_experiment_seed,
    treatment_fraction_for_stage,
)

USER_IDS = [f"user-{index}" for index in range(20_000)]

# GrowthBook's published SDK conformance cases (tests/cases.json, section "hash", hashVersion 2):
# [seed, value, expected bucket].
GROWTHBOOK_HASH_V2_CASES = [
    ("seed", "a", 0.0505),
    ("seed", "b", 0.2696),
    ("foo", "ab", 0.2575),
    ("foo", "def", 0.2019),
    ("89123klj", "8952klfjas09ujkasdf", 0.124),
    ("90850943850283058242805", "123", 0.7516),
    ("()**(%$##$%#$#", '___)((*":&', 0.0128),
]

# Non-ASCII ids hash over UTF-16 code units like GrowthBook's SDKs; these answers were produced by
# growthbook 4.0.0's gbhash(seed, value, 2), including a character outside the BMP (a surrogate pair).
GROWTHBOOK_NON_ASCII_CASES = [
    ("sé", "ü😀x", 0.1843),
    ("abc", "日本語", 0.0263),
]

user_ids = st.text(min_size=1, max_size=40)
seeds = st.text(max_size=40)
fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@pytest.mark.parametrize(("seed", "user_id", "expected"), GROWTHBOOK_HASH_V2_CASES + GROWTHBOOK_NON_ASCII_CASES)
def test_bucket_matches_growthbook_hash_v2(seed: str, user_id: str, expected: float) -> None:
    assert bucket(seed=seed, user_id=user_id) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    # Reference FNV-1a 32-bit values (Fowler/Noll/Vo test suite).
    [("", 0x811C9DC5), ("a", 0xE40C292C), ("foobar", 0xBF9CF968)],
)
def test_fnv1a32_reference_values(text: str, expected: int) -> None:
    assert fnv1a32(text) == expected


@given(seed=seeds, user_id=user_ids)
def test_bucket_is_deterministic_and_one_of_10000_points_in_unit_interval(seed: str, user_id: str) -> None:
    first = bucket(seed=seed, user_id=user_id)
    assert first == bucket(seed=seed, user_id=user_id)
    assert 0.0 <= first < 1.0
    assert round(first * BUCKET_COUNT) / BUCKET_COUNT == first


@given(seed=seeds, user_id=user_ids)
def test_bucket_equals_the_documented_formula(seed: str, user_id: str) -> None:
    # The cached seed state and deferred masking must not change the documented definition.
    expected = (fnv1a32(str(fnv1a32(seed + user_id))) % 10_000) / 10_000
    assert bucket(seed=seed, user_id=user_id) == expected


@given(seed=seeds, user_id=user_ids, first=fractions, second=fractions)
def test_raising_the_fraction_only_moves_users_into_treatment(
    seed: str, user_id: str, first: float, second: float
) -> None:
    lower, higher = sorted((first, second))
    if assign_variant(seed=seed, user_id=user_id, treatment_fraction=lower) == "treatment":
        assert assign_variant(seed=seed, user_id=user_id, treatment_fraction=higher) == "treatment"


@given(seed=seeds, user_id=user_ids)
def test_zero_is_all_control_and_one_is_all_treatment(seed: str, user_id: str) -> None:
    assert assign_variant(seed=seed, user_id=user_id, treatment_fraction=0.0) == "control"
    assert assign_variant(seed=seed, user_id=user_id, treatment_fraction=1.0) == "treatment"


def test_about_ten_percent_of_20000_ids_get_treatment_at_ten_percent() -> None:
    variants = [assign_variant(seed="exp-qa-1", user_id=user_id, treatment_fraction=0.10) for user_id in USER_IDS]
    treated = variants.count("treatment")
    result = stats.chisquare([treated, len(USER_IDS) - treated], f_exp=[2_000, 18_000])
    assert result.pvalue > 0.001, (treated, result)
    assert abs(treated / len(USER_IDS) - 0.10) < 0.0065  # three standard errors


def test_asking_again_gives_identical_answers_for_20000_ids() -> None:
    first = [assign_variant(seed="exp-qa-1", user_id=user_id, treatment_fraction=0.10) for user_id in USER_IDS]
    again = [assign_variant(seed="exp-qa-1", user_id=user_id, treatment_fraction=0.10) for user_id in USER_IDS]
    assert first == again


def test_every_treatment_user_at_10_percent_stays_in_treatment_at_25_percent() -> None:
    at_10 = {u for u in USER_IDS if assign_variant(seed="exp-qa-1", user_id=u, treatment_fraction=0.10) == "treatment"}
    at_25 = {u for u in USER_IDS if assign_variant(seed="exp-qa-1", user_id=u, treatment_fraction=0.25) == "treatment"}
    assert at_10 <= at_25
    assert abs(len(at_25) / len(USER_IDS) - 0.25) < 0.01


def test_buckets_are_uniform_over_ten_bins() -> None:
    buckets = np.array([bucket(seed="exp-qa-1", user_id=u) for u in USER_IDS])
    counts, _ = np.histogram(buckets, bins=10, range=(0.0, 1.0))
    assert stats.chisquare(counts).pvalue > 0.001, counts


def _treated(seed: str, fraction: float) -> np.ndarray:
    return np.array([assign_variant(seed=seed, user_id=u, treatment_fraction=fraction) == "treatment" for u in USER_IDS])


def _independence_p_value(first: np.ndarray, second: np.ndarray) -> float:
    table = [
        [np.sum(first & second), np.sum(first & ~second)],
        [np.sum(~first & second), np.sum(~first & ~second)],
    ]
    return stats.chi2_contingency(table, correction=False).pvalue


def test_two_experiments_with_their_own_seeds_assign_independently() -> None:
    qa_agent, legal_agent = new_experiment_seed(), new_experiment_seed()
    p_value = _independence_p_value(_treated(qa_agent, 0.10), _treated(legal_agent, 0.10))
    assert p_value > 0.001
    buckets_qa = [bucket(seed=qa_agent, user_id=u) for u in USER_IDS]
    buckets_legal = [bucket(seed=legal_agent, user_id=u) for u in USER_IDS]
    # |r| above 4/√n would be a four-standard-error correlation.
    assert abs(np.corrcoef(buckets_qa, buckets_legal)[0, 1]) < 4 / np.sqrt(len(USER_IDS))


def test_the_independence_check_catches_the_prototypes_shared_hash() -> None:
    # The prototype put user u in treatment for every agent when md5(u) % 100 < stage: a check
    # that cannot tell that apart from independent seeds would prove nothing above.
    def prototype(user_id: str) -> bool:
        return int(hashlib.md5(user_id.encode()).hexdigest(), 16) % 100 < 10

    shared = np.array([prototype(u) for u in USER_IDS])
    assert _independence_p_value(shared, shared.copy()) < 1e-10


def test_new_experiment_seeds_differ() -> None:
    seeds_made = {new_experiment_seed() for _ in range(100)}
    assert len(seeds_made) == 100
    assert all(len(seed) == 16 and int(seed, 16) >= 0 for seed in seeds_made)


def test_stage_percent_becomes_its_fraction() -> None:
    assert treatment_fraction_for_stage(stage_percent=25) == 0.25
    # 0 and 100 are stages too (everyone in control, everyone in treatment); just outside is refused.
    assert (treatment_fraction_for_stage(stage_percent=0), treatment_fraction_for_stage(stage_percent=100)) == (0.0, 1.0)
    for outside in (-1, 101):
        with pytest.raises(ValueError, match="stage_percent"):
            treatment_fraction_for_stage(stage_percent=outside)


# Users of the seed "genesis-boundary" whose bucket is exactly k/100 (found by search): the first bucket
# a stage of k % leaves in control.
BOUNDARY_USERS = {0: "user-1328", 10: "user-1992", 25: "user-3697", 50: "user-6058"}


@pytest.mark.parametrize("percent", sorted(BOUNDARY_USERS))
def test_the_user_whose_bucket_is_exactly_the_stage_fraction_stays_in_control(percent: int) -> None:
    # "treatment when bucket < treatment_fraction": at 10 % exactly buckets 0..999 are treatment, so
    # bucket 0.1000 is control at 10 % (and 0 % sends everyone, bucket 0.0 included, to control).
    user_id = BOUNDARY_USERS[percent]
    assert bucket(seed="genesis-boundary", user_id=user_id) == percent / 100
    assign = {
        stage: assign_variant(seed="genesis-boundary", user_id=user_id,
                              treatment_fraction=treatment_fraction_for_stage(stage_percent=stage))
        for stage in (percent, percent + 1)
    }
    assert assign == {percent: "control", percent + 1: "treatment"}


def test_invalid_inputs_are_refused_with_the_reason() -> None:
    for outside in (-0.01, 1.01, 1.5):
        with pytest.raises(ValueError, match="treatment_fraction"):
            assign_variant(seed="s", user_id="u", treatment_fraction=outside)
    assert assign_variant(seed="s", user_id="u", treatment_fraction=1.0) == "treatment"
    with pytest.raises(ValueError, match="user_id"):
        assign_variant(seed="s", user_id="", treatment_fraction=0.5)


@settings(max_examples=50)
@given(seed=seeds, user_id=user_ids)
def test_exactly_the_first_k_buckets_are_treatment_at_k_percent(seed: str, user_id: str) -> None:
    # 10 000 buckets make every whole percentage an exact number of buckets (no float edge).
    position = round(bucket(seed=seed, user_id=user_id) * BUCKET_COUNT)
    for percent in (1, 10, 25, 50, 100):
        expected = "treatment" if position < percent * 100 else "control"
        assert assign_variant(seed=seed, user_id=user_id, treatment_fraction=percent / 100) == expected
