"""The cost dashboard's charts: spend per day as stacked bars and a budget's gauge, mapped onto the
shared chart geometry (genesis/charts.py). Plain data in, rectangles and positions out; the template
only draws them. No Django."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from costs.budgeting import Threshold, format_usd, format_usd_tick
from genesis.charts import Scale, Tick, bands, label_every, nice_ceiling, palette_colours

SEVERITY_COLOURS = {"ok": "#009E73", "warning": "#E69F00", "critical": "#D55E00", "emergency": "#B00020"}
Y_TICK_FRACTIONS = (0, 0.25, 0.5, 0.75, 1)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class LegendItem:
    name: str
    colour: str
    total: str


@dataclass(frozen=True)
class DayRow:
    """One day of a chart's data table: the amount of each series (in legend order) and their total."""

    day: str
    amounts: list[str]
    total: str


@dataclass(frozen=True)
class StackedBars:
    width: int
    height: int
    plot_left: float
    plot_bottom: float
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    legend: list[LegendItem]
    empty: bool
    # The same numbers as a table, for people who cannot see the bars or tell their colours apart
    # (WCAG 1.1.1, 1.4.1): the days with spend only, so a 30-day window stays a short table.
    table: list[DayRow]


def stacked_bars(
    *, days: list[date], series: dict[str, list[Decimal]], width: int = 720, height: int = 240
) -> StackedBars:
    """One bar per day, stacked by series, scaled to the largest day."""
    left, right, top, bottom = 56.0, 8.0, 8.0, 28.0
    plot_width, plot_height = width - left - right, height - top - bottom
    plot_bottom = top + plot_height
    totals = [sum((values[i] for values in series.values()), Decimal(0)) for i in range(len(days))]
    ceiling = nice_ceiling(max(totals, default=Decimal(0)))
    scale = Scale(top=ceiling, length=plot_height)
    day_bands = bands(len(days), slot=plot_width / max(len(days), 1), start=left)
    colours = palette_colours(series)
    bars: list[Bar] = []
    for index, (day, band) in enumerate(zip(days, day_bands, strict=True)):
        x, bar_width = band.centred(share=0.72, minimum=1.0)
        stacked = Decimal(0)
        for name, values in series.items():
            value = values[index]
            if value <= 0:
                continue
            bars.append(
                Bar(
                    x=round(x, 2), y=round(plot_bottom - scale(stacked + value), 2), width=round(bar_width, 2),
                    height=round(max(scale(value), 0.5), 2), colour=colours[name],
                    title=f"{day.isoformat()} {name}: {format_usd(value)}",
                )
            )
            stacked += value
    every = label_every(len(days))
    x_ticks = [
        Tick(position=round(band.centre, 2), label=day.strftime("%m-%d"))
        for index, (day, band) in enumerate(zip(days, day_bands, strict=True))
        if index % every == 0
    ]
    y_ticks = [
        Tick(position=round(plot_bottom - plot_height * fraction, 2),
             label=format_usd_tick(ceiling * Decimal(str(fraction)), step=ceiling / 4))
        for fraction in Y_TICK_FRACTIONS
    ]
    legend = [
        LegendItem(name=name, colour=colours[name], total=format_usd(sum(values, Decimal(0))))
        for name, values in series.items()
    ]
    table = [
        DayRow(day=day.isoformat(), amounts=[format_usd(values[index]) for values in series.values()],
               total=format_usd(totals[index]))
        for index, day in enumerate(days)
        if totals[index] > 0
    ]
    return StackedBars(
        width=width, height=height, plot_left=left, plot_bottom=plot_bottom, bars=bars, x_ticks=x_ticks,
        y_ticks=y_ticks, legend=legend, empty=not bars, table=table,
    )


@dataclass(frozen=True)
class GaugeMarker:
    x: float
    percent: int
    severity: str
    colour: str
    reached: bool


@dataclass(frozen=True)
class Gauge:
    width: int
    height: int
    bar_y: float
    bar_height: float
    fill_width: float
    fill_colour: str
    scale_percent: int  # the right end of the bar
    markers: list[GaugeMarker]
    hundred_x: float


def budget_gauge(*, percent: Decimal, thresholds: list[Threshold], width: int = 720, height: int = 64) -> Gauge:
    """A horizontal bar from 0 to 100 % (further when spend or a threshold goes past it), filled to
    `percent`, with a marker at each threshold coloured by its severity."""
    shown = percent if percent.is_finite() else Decimal(1000)
    scale = max(100, max((t.percent for t in thresholds), default=100), int(min(shown, Decimal(1000))) + 1)
    if scale > 100:
        scale = ((scale + 9) // 10) * 10
    inner_left = 4.0
    along = Scale(top=Decimal(scale), length=width - 8.0)

    def x_of(value: Decimal | int) -> float:
        return round(inner_left + along(min(Decimal(value), Decimal(scale))), 2)

    reached = [t for t in thresholds if shown >= t.percent]
    fill_severity = reached[-1].severity if reached else "ok"
    markers = [
        GaugeMarker(x=x_of(t.percent), percent=t.percent, severity=t.severity, colour=SEVERITY_COLOURS.get(t.severity, "#333"),
                    reached=shown >= t.percent)
        for t in thresholds
    ]
    return Gauge(
        width=width, height=height, bar_y=18.0, bar_height=22.0, fill_width=round(x_of(max(shown, Decimal(0))) - inner_left, 2),
        fill_colour=SEVERITY_COLOURS[fill_severity], scale_percent=scale, markers=markers, hundred_x=x_of(100),
    )
