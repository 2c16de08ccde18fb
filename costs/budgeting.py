"""Budget arithmetic: periods, thresholds, burn rate and projection, refusal messages. No Django.

Everything here takes plain values (Decimal dollars, aware datetimes) so the rules can be tested for
all inputs without a database; costs/services.py applies them under a row lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from costs.pricing import CENT

PERIOD_TOTAL = "total"
PERIOD_MONTHLY = "monthly"
PERIOD_DAILY = "daily"
PERIODS = (PERIOD_TOTAL, PERIOD_MONTHLY, PERIOD_DAILY)

SEVERITIES = ("warning", "critical", "emergency")

# Burn rate looks back this far: long enough to smooth one expensive benchmark, short enough to
# follow a change of pace.
BURN_RATE_WINDOW = timedelta(days=7)
# How far ahead a projection names a date. A tiny burn rate (one $0.00001 charge on a $30 budget: three
# million days) put the date past the year 9999, and building it raised OverflowError — the summary API,
# the dashboard, /metrics and the reports failed with it. Beyond this horizon nothing is in sight.
EXHAUSTION_HORIZON = timedelta(days=36525)  # a hundred years


@dataclass(frozen=True, order=True)
class Threshold:
    percent: int
    severity: str

    def as_dict(self) -> dict[str, object]:
        return {"percent": self.percent, "severity": self.severity}


def default_thresholds(percents: list[int]) -> list[Threshold]:
    """25/50/83 → warning/critical/emergency; any further threshold is an emergency too."""
    ordered = sorted(set(percents))
    return [Threshold(percent, SEVERITIES[min(index, len(SEVERITIES) - 1)]) for index, percent in enumerate(ordered)]


def parse_thresholds(raw: object) -> list[Threshold]:
    """Thresholds from the stored JSON (`[{"percent": 25, "severity": "warning"}, …]`) or from text a
    person typed (`25 warning, 50 critical, 83 emergency`; a bare `25, 50, 83` gets default severities).
    Raises ValueError naming the bad part."""
    if isinstance(raw, str):
        parts = [part.strip() for part in raw.replace(";", ",").split(",") if part.strip()]
        items: list[object] = []
        for part in parts:
            words = part.replace(":", " ").replace("%", " ").split()
            if len(words) == 1:
                items.append({"percent": words[0]})
            elif len(words) == 2:
                items.append({"percent": words[0], "severity": words[1]})
            else:
                raise ValueError(f"'{part}': write a percent and a severity, e.g. '25 warning'")
        raw = items
    if not isinstance(raw, list | tuple):
        raise ValueError("thresholds must be a list")
    percents: list[int] = []
    severities: dict[int, str | None] = {}
    for item in raw:
        if isinstance(item, Threshold):
            item = item.as_dict()
        if isinstance(item, int | str):
            item = {"percent": item}
        if not isinstance(item, dict) or "percent" not in item:
            raise ValueError(f"{item!r}: each threshold needs a percent")
        try:
            percent = int(str(item["percent"]).strip())
        except ValueError:
            raise ValueError(f"'{item['percent']}': a threshold is a whole percent, e.g. 25") from None
        if not 1 <= percent <= 1000:
            raise ValueError(f"{percent}: a threshold is a percent between 1 and 1000")
        if percent in severities:
            raise ValueError(f"{percent} %: listed twice")
        severity = item.get("severity")
        if severity is not None and severity not in SEVERITIES:
            raise ValueError(f"'{severity}': severity is one of {', '.join(SEVERITIES)}")
        percents.append(percent)
        severities[percent] = severity
    defaults = {threshold.percent: threshold.severity for threshold in default_thresholds(percents)}
    return sorted(Threshold(percent, severities[percent] or defaults[percent]) for percent in percents)


def thresholds_text(thresholds: list[Threshold]) -> str:
    """"25 % warning, 50 % critical, 83 % emergency": how people read thresholds, and how they type
    them (parse_thresholds reads it back)."""
    return ", ".join(f"{threshold.percent} % {threshold.severity}" for threshold in thresholds)


@dataclass(frozen=True)
class Period:
    key: str  # "total", "2026-11" or "2026-11-25": one alert per (budget, key, threshold)
    start: datetime | None
    end: datetime | None  # exclusive

    @property
    def label(self) -> str:
        return "all time" if self.key == PERIOD_TOTAL else self.key


def period_containing(period: str, at: datetime) -> Period:
    """The budget period that contains `at`, in `at`'s own time zone."""
    if period == PERIOD_TOTAL:
        return Period(PERIOD_TOTAL, None, None)
    if period == PERIOD_MONTHLY:
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return Period(start.strftime("%Y-%m"), start, end)
    if period == PERIOD_DAILY:
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        # Add a day by calendar, not 24 h, so a DST change does not shift the boundary.
        end = (start + timedelta(days=1, hours=12)).replace(hour=0)
        return Period(start.strftime("%Y-%m-%d"), start, end)
    raise ValueError(f"period '{period}' is not one of {', '.join(PERIODS)}")


def percent_used(*, spent: Decimal, limit: Decimal) -> Decimal:
    """spent / limit × 100. A $0 budget with any spend is used up: 100 % (not ∞), as the API, the
    admin and the reports all read it."""
    if limit <= 0:
        return Decimal(0) if spent <= 0 else Decimal(100)
    return spent * 100 / limit


def thresholds_reached(*, spent: Decimal, limit: Decimal, thresholds: list[Threshold]) -> list[Threshold]:
    """The thresholds `spent` has reached (spent ≥ percent % of limit), compared exactly in Decimal."""
    if limit <= 0:
        return list(thresholds) if spent > 0 else []
    return [threshold for threshold in thresholds if spent * 100 >= limit * threshold.percent]


# The notice that a budget is used up: at 100 %, an emergency, unless a configured threshold of 100 %
# or more already speaks for the budget at and beyond its limit (BUDGET_THRESHOLDS stays 25/50/83).
EXHAUSTED = Threshold(100, "emergency")


def alert_thresholds(thresholds: list[Threshold]) -> list[Threshold]:
    """What alerts fire at: the configured thresholds, and EXHAUSTED when every one is below 100 %."""
    if any(threshold.percent >= EXHAUSTED.percent for threshold in thresholds):
        return list(thresholds)
    return [*thresholds, EXHAUSTED]


def format_usd(amount: Decimal) -> str:
    """Money for people, the one helper of the admin, the reports and the commands: cents from a cent
    up ("$1,234.50"), and below a cent (0.005 included: not "$0.01") two significant digits, so a small amount is never shown as
    nothing: 0.0013 → "$0.0013", 0.000934 → "$0.00093" (the ledger keeps micro-dollars, so at most
    six decimals). Zero is "$0.00"."""
    amount = Decimal(amount)
    sign = "-" if amount < 0 else ""
    magnitude = abs(amount)
    shown = magnitude
    if 0 < magnitude < CENT:
        shown = _two_significant_digits(magnitude)
        if shown == 0:  # below the ledger's micro-dollar, either way: "−$0.000001" would overstate it
            return f"{sign}<$0.000001"
    if shown == 0 or shown >= CENT:  # $0.0096 rounds to a cent: shown as one
        return f"{sign}${shown.quantize(CENT, rounding=ROUND_HALF_UP):,.2f}"
    return f"{sign}${shown:f}"


def _two_significant_digits(magnitude: Decimal) -> Decimal:
    """0.0013 → 0.0013, 0.000934 → 0.00093; a carry keeps two digits (0.000996 → 0.0010, not 0.00100).
    At most six decimals (the ledger's micro-dollars), so 0.0000004 → 0."""
    places = min(6, 1 - magnitude.adjusted())
    shown = magnitude.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if shown and shown.adjusted() > magnitude.adjusted():
        shown = shown.quantize(Decimal(1).scaleb(1 - places))
    return shown


def format_usd_tick(value: Decimal, *, step: Decimal) -> str:
    """A chart axis label: as many decimals as the axis step needs (at least two), so the ticks of a
    $0.005 axis read $0.00125, $0.0025… rather than $0.00 five times."""
    value, step = Decimal(value), Decimal(step)
    places = 2 if step <= 0 else min(6, max(2, -int(step.normalize().as_tuple().exponent)))
    return f"${value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,.{places}f}"


def percent_shown(value: Decimal, *, places: int) -> Decimal:
    """A percent as it is shown, to `places` decimals, rounded down — so a threshold is never shown as
    reached before it is (24.995 → 24.99 beside no threshold crossed, not 25.0). The one rule of the
    admin and the commands (format_percent, one decimal) and the API and reports (two)."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)


def format_percent(value: Decimal) -> str:
    """91 → "91 %", 96.666… → "96.6 %" (rounded down, so a threshold is never shown as reached early)."""
    shown = percent_shown(value, places=1)
    text = f"{shown:f}".removesuffix(".0")
    return f"{text} %"


def format_share(part: Decimal, whole: Decimal) -> str:
    """`part`'s share of `whole` for a report: one decimal rounded half-up (99.785 → "99.8 %"), and a
    share that is not nothing never reads as nothing ("<0.1 %"); "—" when the whole is zero."""
    if whole == 0:
        return "—"
    share = (part * 100 / whole).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    if share == 0 and part != 0:
        return "<0.1 %"
    return f"{f'{share:f}'.removesuffix('.0')} %"


def money_str(amount: Decimal, *, places: int = 6) -> str:
    """Money for JSON, the one format of the API: a plain decimal string (never "0E-8"), exact to
    `places` decimals (the ledger's micro-dollars; an outcome's cost has eight), at least two:
    7.5 → "7.50", 0.000025 → "0.000025", 0 → "0.00"."""
    exact = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP).normalize()
    if exact == exact.to_integral_value() or -int(exact.as_tuple().exponent) < 2:
        return f"{exact.quantize(CENT):f}"
    return f"{exact:f}"


@dataclass(frozen=True)
class Shortfall:
    budget: str
    limit: Decimal
    spent: Decimal
    estimate: Decimal
    period: Period
    held: Decimal = Decimal(0)  # set aside for paid work still running

    @property
    def remaining(self) -> Decimal:
        return max(self.limit - self.spent - self.held, Decimal(0))


def estimate_shortfall(
    *, budget: str, limit: Decimal, spent: Decimal, estimate: Decimal, period: Period, held: Decimal = Decimal(0)
) -> Shortfall | None:
    """A Shortfall when the estimate does not fit in what is left of the budget — the limit less what
    is spent and what running work holds — else None. A budget with nothing left refuses everything,
    even an estimate of zero: an estimate is a guess, and paid work started on a spent budget can
    only overspend it."""
    remaining = limit - spent - held
    if remaining > 0 and estimate <= remaining:
        return None
    return Shortfall(budget=budget, limit=limit, spent=spent, estimate=estimate, period=period, held=held)


def refusal_message(shortfall: Shortfall, *, override_permission: str, to_api_key: bool = False) -> str:
    """Why the budget refuses and what to do. A person (admin, CLI) can override with a reason; an API
    key cannot (`to_api_key`), so the API's words say who can, and where."""
    period = "" if shortfall.period.key == PERIOD_TOTAL else f" for {shortfall.period.label}"
    percent = format_percent(percent_used(spent=shortfall.spent, limit=shortfall.limit))
    if shortfall.remaining <= 0:
        need = "nothing is left, so no paid work may start"
    else:
        need = (
            f"this run needs an estimated {format_usd(shortfall.estimate)} "
            f"but only {format_usd(shortfall.remaining)} is left"
        )
    held = f", {format_usd(shortfall.held)} held by work still running" if shortfall.held > 0 else ""
    if to_api_key:
        override = (f"have a person with {override_permission} override it with a reason in the admin or "
                    "the command line (an API key cannot override a budget)")
    else:
        override = f"pass an override reason as a user with {override_permission}"
    return (
        f"budget '{shortfall.budget}' is at {percent} of {format_usd(shortfall.limit)}{period} "
        f"({format_usd(shortfall.spent)} spent{held}); {need} — raise the budget or {override}"
    )


@dataclass(frozen=True)
class Projection:
    spent: Decimal
    limit: Decimal
    remaining: Decimal
    burn_usd_per_day: Decimal
    window_days: Decimal
    exhausted: bool
    exhaustion_at: datetime | None  # None: no spending, or so little that it lasts past EXHAUSTION_HORIZON
    within_period: bool  # False when the money outlasts the period (it resets first)


def project_exhaustion(
    *,
    spent: Decimal,
    limit: Decimal,
    window_spend: Decimal,
    window_start: datetime,
    now: datetime,
    period_end: datetime | None,
) -> Projection:
    """Burn rate = spend in the window / the window's length in days (at least one day, so a first
    expensive hour is not extrapolated to a full day twenty-four times). Exhaustion = now + what is
    left / burn rate, compared in Decimal with EXHAUSTION_HORIZON first: further away than that it is
    None (not in sight, not within the period), never a date past what a datetime can hold."""
    window_days = max(Decimal(str((now - window_start).total_seconds())) / Decimal(86400), Decimal(1))
    burn = max(window_spend, Decimal(0)) / window_days
    remaining = limit - spent
    exhausted = remaining <= 0
    exhaustion_at: datetime | None
    if exhausted:
        exhaustion_at = now
    elif burn > 0 and remaining / burn <= EXHAUSTION_HORIZON.days:
        exhaustion_at = now + timedelta(days=float(remaining / burn))
    else:
        exhaustion_at = None
    within = exhaustion_at is not None and (period_end is None or exhaustion_at < period_end)
    return Projection(
        spent=spent,
        limit=limit,
        remaining=max(remaining, Decimal(0)),
        burn_usd_per_day=burn,
        window_days=window_days,
        exhausted=exhausted,
        exhaustion_at=exhaustion_at,
        within_period=within,
    )


def burn_window_start(*, now: datetime, period_start: datetime | None, first_entry_at: datetime | None) -> datetime:
    """The burn-rate window starts a week ago, or at the period start or first entry if later."""
    start = now - BURN_RATE_WINDOW
    for candidate in (period_start, first_entry_at):
        if candidate is not None and candidate > start:
            start = candidate
    return min(start, now)
