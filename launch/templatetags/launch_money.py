"""`{{ amount|usd }}`: money in templates through the one helper (costs.budgeting.format_usd)."""

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
