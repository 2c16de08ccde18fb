"""Deterministic assignment of users to the arms of an experiment (pure: no Django).

The rule
--------
A user's *bucket* is a number in [0, 1) computed from the experiment's seed and the user id::

    bucket = (fnv1a32(str(fnv1a32(seed + user_id))) % 10000) / 10000

and the user is in *treatment* when ``bucket < treatment_fraction`` (the stage's percentage / 100),
in *control* otherwise. This is GrowthBook's hash version 2, bit for bit (``gbhash(seed, value, 2)``
in the GrowthBook SDKs; the known-answer test replays GrowthBook's published ``hash`` vectors):

* ``fnv1a32`` is 32-bit FNV-1a: start from the offset basis 0x811C9DC5 and for each input unit
  ``h = (h XOR unit) * 0x01000193 mod 2**32``. The units are the string's UTF-16 code units, like
  JavaScript's ``charCodeAt`` (for ASCII text these are simply its bytes), so a user id hashes the
  same here, in GrowthBook's Python SDK and in its JavaScript SDK.
* The inner hash is written as a decimal string and hashed again. Hashing twice removes the bias a
  single FNV pass shows when seeds share a prefix (the reason GrowthBook introduced v2).
* ``% 10000 / 10000`` gives 10 000 equally likely buckets, so any whole percentage is an exact
  number of buckets: at 10 % exactly buckets 0..999 are treatment.

Why this shape
--------------
* Same (seed, user) -> same bucket, forever: no state, nothing to store to answer again.
* Raising the stage only moves users control -> treatment: the bucket does not depend on the
  fraction, and ``bucket < 0.10`` implies ``bucket < 0.25``.
* Each experiment has its own random seed (:func:`new_experiment_seed`), so a user's bucket in one
  agent's experiment is unrelated to their bucket in another's (the prototype hashed the user
  alone, which put the same 10 % of users in every agent's treatment).

Speed: FNV-1a is a stream hash, so the state after the seed is computed once per seed and cached;
each decision then hashes only the user id and the ≤ 10 digits of the inner hash. Masking to 32
bits is deferred to the end of each pass: XOR with a unit touches only the low 16 bits, so
``(h XOR u) * p mod 2**32`` depends only on ``h mod 2**32`` and the result is unchanged.
``bench/assignment/run.py`` measures this against the GrowthBook SDK making the same decision.
"""

from __future__ import annotations

import secrets
from typing import Literal

Variant = Literal["control", "treatment"]

BUCKET_COUNT = 10_000

_FNV_OFFSET_BASIS = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK_32 = 0xFFFFFFFF

# FNV state after hashing each seed. Seeds are one per experiment, so this stays small; the cap
# only guards a process that somehow sees unbounded seeds.
_SEED_STATES: dict[str, int] = {}
_SEED_STATES_CAP = 4_096


def new_experiment_seed() -> str:
    """A fresh random seed for a new experiment (64 bits, hex)."""
    return secrets.token_hex(8)


def bucket(*, seed: str, user_id: str) -> float:
    """The user's bucket in [0, 1) for the experiment with this seed (GrowthBook hash v2)."""
    return _bucket(seed, user_id)


def assign_variant(*, seed: str, user_id: str, treatment_fraction: float) -> Variant:
    """'treatment' when the user's bucket is below ``treatment_fraction``, else 'control'.

    ``treatment_fraction`` is the stage as a fraction (25 % -> 0.25); 0 sends everyone to control.
    """
    if not 0.0 <= treatment_fraction <= 1.0:
        raise ValueError(f"treatment_fraction must be between 0 and 1, got {treatment_fraction!r}")
    return "treatment" if _bucket(seed, user_id) < treatment_fraction else "control"


def treatment_fraction_for_stage(*, stage_percent: int) -> float:
    """The treatment fraction of a rollout stage given in whole percent (10 -> 0.10)."""
    if not 0 <= stage_percent <= 100:
        raise ValueError(f"stage_percent must be between 0 and 100, got {stage_percent!r}")
    return stage_percent / 100


def _bucket(seed: str, user_id: str) -> float:
    # Positional and inlined: this is the hot path of every routing decision.
    if not user_id:
        # An empty id would put every anonymous request into one bucket; GrowthBook skips the
        # experiment for such users. The API refuses it before it gets here.
        raise ValueError("user_id must be a non-empty string")
    state = _SEED_STATES.get(seed)
    if state is None:
        state = _seed_state(seed)
    if user_id.isascii():
        for unit in user_id.encode("ascii"):
            state = (state ^ unit) * _FNV_PRIME
    else:
        for unit in _utf16_code_units(user_id):
            state = (state ^ unit) * _FNV_PRIME
    inner = state & _MASK_32
    outer = _FNV_OFFSET_BASIS
    for digit in b"%d" % inner:
        outer = (outer ^ digit) * _FNV_PRIME
    return ((outer & _MASK_32) % BUCKET_COUNT) / BUCKET_COUNT


def _seed_state(seed: str) -> int:
    state = _fnv1a32(_FNV_OFFSET_BASIS, seed)
    if len(_SEED_STATES) >= _SEED_STATES_CAP:
        _SEED_STATES.clear()
    _SEED_STATES[seed] = state
    return state


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a of ``text`` over its UTF-16 code units (GrowthBook's and JavaScript's way)."""
    return _fnv1a32(_FNV_OFFSET_BASIS, text)


def _fnv1a32(state: int, text: str) -> int:
    units = text.encode("ascii") if text.isascii() else _utf16_code_units(text)
    for unit in units:
        state = ((state ^ unit) * _FNV_PRIME) & _MASK_32
    return state


def _utf16_code_units(text: str) -> list[int]:
    # Characters outside the BMP become two surrogate units, as in JavaScript strings.
    data = text.encode("utf-16-le", "surrogatepass")
    return [data[i] | (data[i + 1] << 8) for i in range(0, len(data), 2)]
