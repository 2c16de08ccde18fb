"""How every bench says whether it met its target: one line, `<what>: <value> (target <op> <bound>) PASS|FAIL`.

The scripts exit 0 when all their targets are met and 1 otherwise, so a script can gate a change.
"""


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
