"""Geometry of the admin's plain SVG charts — no JavaScript, no CDN: the admin may have no internet.
Numbers in, rectangles and positions out; each admin maps its data onto these (which bars, which
colours, which labels) and its template only draws them. No Django."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

# Colour-blind-safe (Okabe–Ito), then greys for any further series.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999", "#666666", "#333333")


def palette_colours(names: Iterable[str]) -> dict[str, str]:
    """One colour per series, in order (the palette repeats past its end)."""
    return {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(names)}


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


def nice_ceiling(value: Decimal) -> Decimal:
    """1, 2, 2.5, 5 × 10^n at or above `value`, for a readable axis."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        candidate = step.scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal(10).scaleb(exponent)


Number = TypeVar("Number", int, float, Decimal)  # a scale's values are all of one kind (money stays Decimal)


@dataclass(frozen=True)
class Scale(Generic[Number]):
    """Values from 0 to `top` onto `length` pixels."""

    top: Number
    length: float

    def fraction(self, value: Number) -> float:
        return float(value / self.top)

    def __call__(self, value: Number) -> float:
        return self.length * self.fraction(value)


@dataclass(frozen=True)
class Band:
    """One category's slot along an axis: where it starts and how wide it is."""

    start: float
    width: float

    @property
    def centre(self) -> float:
        return self.start + self.width / 2

    def part(self, *, offset: float, share: float) -> tuple[float, float]:
        """Start and width of a bar taking `share` of the slot, `offset` (a share too) from its start."""
        return self.start + offset * self.width, share * self.width

    def centred(self, *, share: float, minimum: float = 0.0) -> tuple[float, float]:
        """Start and width of a bar taking `share` of the slot (at least `minimum` pixels), centred in it."""
        width = max(self.width * share, minimum)
        return self.start + (self.width - width) / 2, width


def bands(count: int, *, slot: float, start: float = 0) -> list[Band]:
    """`count` slots of `slot` pixels side by side from `start`."""
    return [Band(start=start + index * slot, width=slot) for index in range(count)]


def label_every(count: int, *, most: int = 6) -> int:
    """Label every n-th slot so that about `most` labels fit along the axis."""
    return max(count // most, 1)
