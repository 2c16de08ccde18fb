"""Counted nouns for messages people read: "1 line", "2 lines", "1,204 hard examples".

Pure module (stdlib only); no Django — the cores, the commands and the admin of audits (and the
apps above it) all word their counts here, so "1 lines" cannot come back from one of them.
"""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``noun`` as it goes with ``count``: "line" for 1, "lines" (or ``plural_form``) otherwise."""
    if count == 1:
        return noun
    return plural_form if plural_form is not None else f"{noun}s"


def counted(count: int, noun: str, plural_form: str | None = None) -> str:
    """"1 line", "0 lines", "1,204 lines" — the count (thousands separated) and its noun."""
    return f"{count:,} {plural(count, noun, plural_form)}"
