"""Money shown to people (costs.budgeting.format_usd, the one helper of the admin, reports and CLI)
and chart axes (format_usd_tick): small amounts are never shown as nothing."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from costs.budgeting import format_usd, format_usd_tick
from costs.charts import stacked_bars


@pytest.mark.parametrize(("amount", "shown"), [
    ("0", "$0.00"), ("0.0013", "$0.0013"), ("0.000934", "$0.00093"), ("0.000001", "$0.000001"),
    ("0.0049", "$0.0049"), ("0.005", "$0.0050"), ("0.006", "$0.0060"), ("0.000996", "$0.0010"), ("0.00996", "$0.01"),
    ("0.01", "$0.01"), ("0.014", "$0.01"), ("0.25", "$0.25"), ("4.0013", "$4.00"), ("1234.5", "$1,234.50"),
    ("-0.0013", "-$0.0013"), ("0.0000004", "<$0.000001"), ("-0.0000004", "-<$0.000001"),
])
def test_format_usd(amount, shown):
    assert format_usd(Decimal(amount)) == shown


def test_axis_ticks_of_sub_cent_spend_have_a_unit_that_tells_them_apart():
    days = [date(2026, 12, 1) + timedelta(days=n) for n in range(3)]
    chart = stacked_bars(days=days, series={"qa_agent": [Decimal("0.0013"), Decimal("0.0004"), Decimal(0)]})
    labels = [tick.label for tick in chart.y_ticks]
    assert labels == ["$0.0000", "$0.0005", "$0.0010", "$0.0015", "$0.0020"]
    assert len(set(labels)) == 5
    assert format_usd_tick(Decimal("7.5"), step=Decimal("2.5")) == "$7.50"
    assert format_usd_tick(Decimal(0), step=Decimal(0)) == "$0.00"  # an axis with no step: cents
