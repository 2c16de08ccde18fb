"""How every bench says whether it met its target: one line, `<what>: <value> (target <op> <bound>) PASS|FAIL`.

The scripts exit 0 when all their targets are met and 1 otherwise, so a script can gate a change.
"""

import os
import sys


def meets_target(what: str, value: float, *, at_least: float | None = None, at_most: float | None = None,
                 digits: int = 2, unit: str = "") -> bool:
    """Print the verdict line for `value` against a lower (`at_least`) or upper (`at_most`) bound."""
    if at_least is not None and at_most is None:
        bound, op, met = at_least, ">=", value >= at_least
    elif at_most is not None and at_least is None:
        bound, op, met = at_most, "<=", value <= at_most
    else:
        raise ValueError("give exactly one of at_least and at_most")
    print(f"{what}: {value:,.{digits}f}{unit} (target {op} {bound:,.{digits}f}{unit}) {'PASS' if met else 'FAIL'}")
    return met


def services_missing(why: str, *, redis: bool = False) -> bool:
    """Whether DATABASE_URL names no PostgreSQL database (or, with `redis`, REDIS_URL is unset), saying
    what to set and `why` on stderr: the benches measure the real services, never SQLite's stand-ins."""
    postgres = os.environ.get("DATABASE_URL", "").startswith("postgres")
    if postgres and (os.environ.get("REDIS_URL") or not redis):
        return False
    wanted = "DATABASE_URL (a scratch PostgreSQL database)" + (" and REDIS_URL (a Redis database of its own)" if redis else "")
    print(f"set {wanted}: {why}", file=sys.stderr)
    return True
