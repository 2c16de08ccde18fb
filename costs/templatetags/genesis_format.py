"""Template filters every admin page shares, so a number reads the same everywhere:
`{{ amount|usd }}` (costs.budgeting.format_usd: "$0.0013", never "$0.00" for a small charge) and
`{{ fraction|percent }}` (0.1234 → "+12.3 %", the way the headline improvement is written)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import template

from costs.budgeting import format_usd

register = template.Library()


@register.filter
def usd(value: object) -> str:
    if value is None or value == "":
        return "—"
    try:
        return format_usd(Decimal(str(value)))
    except InvalidOperation:
        return str(value)


@register.filter
def percent(value: float | Decimal | str | None) -> str:
    """A relative change (a fraction) as a signed percent with one decimal; "—" when there is none."""
    if value is None or value == "":
        return "—"
    try:
        return f"{float(value) * 100:+.1f} %"
    except (TypeError, ValueError):
        return str(value)


@register.filter
def sentence(message: object) -> str:
    """An admin message as a sentence: its first word capitalised ("user 'ana' may not…" → "User…") —
    unless that word is a name, which is shown as written: a file ("pii.jsonl stored…"), a field
    ("training_file: …", "mix: …"), anything with a dot, underscore, colon, digit or quote in it.
    (Django's admin capitalises every message, which turned "pii.jsonl" into "Pii.jsonl".)"""
    text = str(message)
    first = text.split(" ", 1)[0]
    return text[:1].upper() + text[1:] if first.isalpha() else text
