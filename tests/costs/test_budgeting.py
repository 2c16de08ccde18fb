"""costs/budgeting.py: periods, thresholds, the refusal message, burn rate and projection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costs.budgeting import (
    EXHAUSTED,
    EXHAUSTION_HORIZON,
    Period,
    Threshold,
    alert_thresholds,
    burn_window_start,
    default_thresholds,
    estimate_shortfall,
    format_percent,
    format_share,
    money_str,
    parse_thresholds,
    percent_used,
    period_containing,
    project_exhaustion,
    refusal_message,
    thresholds_reached,
    thresholds_text,
)

DEFAULT = default_thresholds([25, 50, 83])


def test_default_thresholds_get_warning_critical_emergency():
    assert DEFAULT == [Threshold(25, "warning"), Threshold(50, "critical"), Threshold(83, "emergency")]
    assert default_thresholds([90, 10, 50, 75])[-1] == Threshold(90, "emergency")


def test_parse_thresholds_from_text_json_and_errors():
    assert parse_thresholds("25 warning, 50 critical, 83 emergency") == DEFAULT
    assert parse_thresholds("83, 25, 50") == DEFAULT
    assert parse_thresholds([{"percent": 50, "severity": "emergency"}, 25]) == [Threshold(25, "warning"), Threshold(50, "emergency")]
    with pytest.raises(ValueError, match="'loud': severity is one of warning, critical, emergency"):
        parse_thresholds("25 loud")
    with pytest.raises(ValueError, match="25 %: listed twice"):
        parse_thresholds("25, 25")
    with pytest.raises(ValueError, match="between 1 and 1000"):
        parse_thresholds([0])
    with pytest.raises(ValueError, match="between 1 and 1000"):
        parse_thresholds([1001])
    # Both ends of "a percent between 1 and 1000" are thresholds.
    assert [threshold.percent for threshold in parse_thresholds("1, 1000")] == [1, 1000]


def test_thresholds_read_as_people_type_them_and_parse_back():
    assert thresholds_text(DEFAULT) == "25 % warning, 50 % critical, 83 % emergency"
    assert parse_thresholds(thresholds_text(DEFAULT)) == DEFAULT


def test_the_exhausted_notice_is_added_unless_a_threshold_of_100_or_more_is_configured():
    assert alert_thresholds(DEFAULT) == [*DEFAULT, EXHAUSTED] and EXHAUSTED == Threshold(100, "emergency")
    assert alert_thresholds(parse_thresholds("50, 100 critical")) == parse_thresholds("50, 100 critical")
    assert alert_thresholds(parse_thresholds("50, 150")) == parse_thresholds("50, 150")


def test_periods_and_their_keys():
    at = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_containing("total", at) == Period("total", None, None)
    monthly = period_containing("monthly", at)
    assert (monthly.key, monthly.start, monthly.end) == ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    daily = period_containing("daily", at)
    assert (daily.key, daily.start, daily.end) == ("2026-12-31", datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(("at", "month", "day"), [
    ((2028, 2, 29, 23, 59, 59, 999_999), ("2028-02", (2028, 2, 1), (2028, 3, 1)), ((2028, 2, 29), (2028, 3, 1))),  # leap day
    ((2027, 12, 31, 23, 59, 59, 999_999), ("2027-12", (2027, 12, 1), (2028, 1, 1)), ((2027, 12, 31), (2028, 1, 1))),
    ((2027, 3, 1, 0, 0), ("2027-03", (2027, 3, 1), (2027, 4, 1)), ((2027, 3, 1), (2027, 3, 2))),
])
def test_a_period_runs_from_its_first_instant_to_the_next_ones_at_every_month_and_year_end(at, month, day):
    monthly, daily = period_containing("monthly", datetime(*at, tzinfo=UTC)), period_containing("daily", datetime(*at, tzinfo=UTC))
    assert (monthly.key, monthly.start, monthly.end) == (month[0], datetime(*month[1], tzinfo=UTC), datetime(*month[2], tzinfo=UTC))
    assert (daily.start, daily.end) == (datetime(*day[0], tzinfo=UTC), datetime(*day[1], tzinfo=UTC))


def test_periods_are_the_months_and_days_of_the_time_zone_of_the_moment_given():
    """Calendar review: with TIME_ZONE=Europe/Paris a budget's month is Paris's (services pass the moment
    in local time): 23:30 UTC on 31 January is February there. Its days are midnight to midnight, 23
    hours on the day summer time starts and 25 on the day it ends."""
    paris = ZoneInfo("Europe/Paris")
    february = period_containing("monthly", datetime(2027, 1, 31, 23, 30, tzinfo=UTC).astimezone(paris))
    assert february.key == "2027-02" and february.start == datetime(2027, 1, 31, 23, 0, tzinfo=UTC)
    assert february.end == datetime(2027, 2, 28, 23, 0, tzinfo=UTC)
    spring = period_containing("daily", datetime(2027, 3, 28, 12, 0, tzinfo=paris))
    autumn = period_containing("daily", datetime(2027, 10, 31, 12, 0, tzinfo=paris))
    # Measured in UTC: Python subtracts two times of one zone on the wall clock (24 h either day).
    assert [period.end.astimezone(UTC) - period.start.astimezone(UTC) for period in (spring, autumn)] == [
        timedelta(hours=23), timedelta(hours=25)]
    assert spring.end == datetime(2027, 3, 28, 22, 0, tzinfo=UTC) and autumn.start == datetime(2027, 10, 30, 22, 0, tzinfo=UTC)


def test_a_zero_budget_is_used_up_by_any_spend_and_untouched_without():
    # "A $0 budget with any spend is used up: 100 % (not ∞)", and nothing spent of nothing is 0 %.
    assert percent_used(spent=Decimal("0.000001"), limit=Decimal(0)) == 100
    assert percent_used(spent=Decimal(0), limit=Decimal(0)) == 0
    assert percent_used(spent=Decimal("7.50"), limit=Decimal(30)) == 25


def test_thresholds_are_reached_exactly_at_the_percent():
    limit = Decimal("30")
    assert thresholds_reached(spent=Decimal("7.499999"), limit=limit, thresholds=DEFAULT) == []
    assert thresholds_reached(spent=Decimal("7.50"), limit=limit, thresholds=DEFAULT) == DEFAULT[:1]
    assert thresholds_reached(spent=Decimal("24.90"), limit=limit, thresholds=DEFAULT) == DEFAULT  # 83 % of $30
    assert thresholds_reached(spent=Decimal("24.899999"), limit=limit, thresholds=DEFAULT) == DEFAULT[:2]
    assert thresholds_reached(spent=Decimal("0.01"), limit=Decimal(0), thresholds=DEFAULT) == DEFAULT


@given(
    spent=st.decimals(min_value=0, max_value=1000, places=6),
    more=st.decimals(min_value=0, max_value=1000, places=6),
    limit=st.decimals(min_value=Decimal("0.01"), max_value=1000, places=2),
)
def test_reached_thresholds_only_grow_as_spend_grows(spent, more, limit):
    before = thresholds_reached(spent=spent, limit=limit, thresholds=DEFAULT)
    after = thresholds_reached(spent=spent + more, limit=limit, thresholds=DEFAULT)
    assert set(before) <= set(after)
    assert all(spent * 100 >= limit * t.percent for t in before)


def test_refusal_message_names_budget_numbers_and_the_way_out():
    shortfall = estimate_shortfall(
        budget="default", limit=Decimal("30"), spent=Decimal("27.30"), estimate=Decimal("3.00"), period=Period("total", None, None)
    )
    assert refusal_message(shortfall, override_permission="costs.override_budget") == (
        "budget 'default' is at 91 % of $30.00 ($27.30 spent); this run needs an estimated $3.00 but only $2.70 is "
        "left — raise the budget or pass an override reason as a user with costs.override_budget"
    )
    assert estimate_shortfall(budget="d", limit=Decimal("30"), spent=Decimal("27.30"), estimate=Decimal("2.70"),
                              period=Period("total", None, None)) is None


@given(
    limit=st.decimals(min_value=0, max_value=1000, places=2),
    spent=st.decimals(min_value=0, max_value=2000, places=6),
    estimate=st.decimals(min_value=0, max_value=1000, places=6),
)
def test_work_fits_only_when_something_is_left_and_the_estimate_fits_in_it(limit, spent, estimate):
    shortfall = estimate_shortfall(budget="b", limit=limit, spent=spent, estimate=estimate, period=Period("total", None, None))
    fits = limit - spent > 0 and estimate <= limit - spent
    assert (shortfall is None) == fits


def test_a_spent_budget_refuses_an_estimate_of_zero_and_says_nothing_is_left():
    total = Period("total", None, None)
    for limit, spent in ((Decimal("30"), Decimal("30")), (Decimal("30"), Decimal("31.5")), (Decimal("0"), Decimal("0"))):
        assert estimate_shortfall(budget="d", limit=limit, spent=spent, estimate=Decimal(0), period=total) is not None
    assert estimate_shortfall(budget="d", limit=Decimal("30"), spent=Decimal("29.99"), estimate=Decimal(0), period=total) is None
    spent = estimate_shortfall(budget="default", limit=Decimal("30"), spent=Decimal("31.50"), estimate=Decimal(0), period=total)
    assert refusal_message(spent, override_permission="costs.override_budget") == (
        "budget 'default' is at 105 % of $30.00 ($31.50 spent); nothing is left, so no paid work may start — raise "
        "the budget or pass an override reason as a user with costs.override_budget"
    )


def test_the_refusal_to_an_api_key_says_who_can_override_and_where():
    total = Period("total", None, None)
    short = estimate_shortfall(budget="default", limit=Decimal("30"), spent=Decimal("29"), estimate=Decimal("2"), period=total)
    person = refusal_message(short, override_permission="costs.override_budget")
    api = refusal_message(short, override_permission="costs.override_budget", to_api_key=True)
    # The same facts; only the way on differs.
    assert person.split(" — ")[0] == api.split(" — ")[0]
    assert api.endswith("raise the budget or have a person with costs.override_budget override it with a reason in the "
                        "admin or the command line (an API key cannot override a budget)")


def test_a_share_that_is_not_nothing_never_reads_as_nothing():
    assert format_share(Decimal("0.0004"), Decimal("1")) == "<0.1 %"
    assert format_share(Decimal(0), Decimal("1")) == "0 %"
    assert format_share(Decimal("0.99785"), Decimal("1")) == "99.8 %"
    assert format_share(Decimal(1), Decimal(0)) == "—"


def test_percent_is_shown_rounded_down_and_money_strings_are_exact():
    assert format_percent(Decimal("96.6666")) == "96.6 %"
    assert format_percent(Decimal("82.99")) == "82.9 %"
    assert format_percent(Decimal("91")) == "91 %"
    assert money_str(Decimal("7.500000")) == "7.50"
    assert money_str(Decimal("30")) == "30.00"
    assert money_str(Decimal("0.000025")) == "0.000025"
    assert money_str(Decimal("-1.2")) == "-1.20"
    # Zero with many places is still fixed-point (str(Decimal("0E-8")) is "0E-8").
    assert money_str(Decimal("0E-8")) == money_str(Decimal("0E-8"), places=8) == "0.00"
    assert money_str(Decimal("0.00000123"), places=8) == "0.00000123"
    assert money_str(Decimal("0.00000123")) == "0.000001"


def test_projection_from_burn_rate():
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    start = now - timedelta(days=4)
    projection = project_exhaustion(
        spent=Decimal("20"), limit=Decimal("30"), window_spend=Decimal("8"), window_start=start, now=now, period_end=None
    )
    assert projection.burn_usd_per_day == Decimal("2")
    assert projection.exhaustion_at == now + timedelta(days=5)
    assert projection.within_period and not projection.exhausted
    idle = project_exhaustion(spent=Decimal("1"), limit=Decimal("30"), window_spend=Decimal(0), window_start=start, now=now, period_end=None)
    assert idle.exhaustion_at is None and not idle.within_period
    month_end = now + timedelta(days=2)
    late = project_exhaustion(spent=Decimal("20"), limit=Decimal("30"), window_spend=Decimal("8"), window_start=start, now=now, period_end=month_end)
    assert not late.within_period
    over = project_exhaustion(spent=Decimal("31"), limit=Decimal("30"), window_spend=Decimal("8"), window_start=start, now=now, period_end=None)
    assert over.exhausted and over.remaining == 0 and over.exhaustion_at == now
    # Spent to the cent is used up too ("nothing is left"), not a budget about to run out.
    spent_out = project_exhaustion(spent=Decimal("30"), limit=Decimal("30"), window_spend=Decimal("8"), window_start=start,
                                   now=now, period_end=None)
    assert spent_out.exhausted and spent_out.remaining == 0 and spent_out.exhaustion_at == now


def test_a_projection_beyond_the_horizon_is_not_in_sight_rather_than_an_overflow():
    """Money review: one $0.00001 charge on the default $30 budget is a burn rate of $0.00001 a day:
    three million days left, past the year 9999 — `now + timedelta(...)` raised OverflowError, and the
    summary API, the dashboard, /metrics and the reports failed with it."""
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    start = now - timedelta(days=1)
    tiny = project_exhaustion(spent=Decimal("0.00001"), limit=Decimal("30"), window_spend=Decimal("0.00001"),
                              window_start=start, now=now, period_end=None)
    assert tiny.burn_usd_per_day == Decimal("0.00001") and tiny.remaining == Decimal("29.99999")
    assert tiny.exhaustion_at is None and not tiny.within_period and not tiny.exhausted
    # At the horizon exactly a date is still named; a micro-dollar a day less spend and it is not.
    horizon_days = Decimal(EXHAUSTION_HORIZON.days)
    at = project_exhaustion(spent=Decimal(0), limit=horizon_days, window_spend=Decimal(1), window_start=start, now=now, period_end=None)
    assert at.exhaustion_at == now + EXHAUSTION_HORIZON and at.within_period
    past = project_exhaustion(spent=Decimal(0), limit=horizon_days + Decimal("0.000001"), window_spend=Decimal(1),
                              window_start=start, now=now, period_end=None)
    assert past.exhaustion_at is None and not past.within_period


@given(
    limit=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("9999999999.999999"), places=6),
    window_spend=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("9999999999.999999"), places=6),
    window_days=st.integers(min_value=0, max_value=7),
)
def test_a_projection_never_overflows_for_any_ledger_amounts(limit, window_spend, window_days):
    now = datetime(2026, 11, 25, tzinfo=UTC)
    projection = project_exhaustion(spent=Decimal(0), limit=limit, window_spend=window_spend,
                                    window_start=now - timedelta(days=window_days), now=now, period_end=None)
    assert projection.exhaustion_at is None or now <= projection.exhaustion_at <= now + EXHAUSTION_HORIZON


def test_burn_window_is_a_week_or_since_the_first_entry():
    now = datetime(2026, 11, 25, tzinfo=UTC)
    assert burn_window_start(now=now, period_start=None, first_entry_at=None) == now - timedelta(days=7)
    assert burn_window_start(now=now, period_start=None, first_entry_at=now - timedelta(hours=3)) == now - timedelta(hours=3)
    assert burn_window_start(now=now, period_start=datetime(2026, 11, 1, tzinfo=UTC), first_entry_at=None) == now - timedelta(days=7)
