"""The one validation layer for identifiers and free text that come from outside (path, query, JSON
body and multipart form fields), applied by the API's parameter and body types before any query.

PostgreSQL text cannot hold the NUL character and UTF-8 cannot hold a lone surrogate, so a value with
either could never be looked up or written: it is refused here as a 422 naming the field instead of
failing deep inside a query as a 500. Lengths are bounded by the columns the values are compared
with, so an over-long value is refused up front too. The same bounds appear in the OpenAPI document
(`maxLength`, and a `pattern` that excludes NUL), so what the schema allows is what the API accepts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, TypedDict

from django.http import HttpRequest
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from genesis.errors import InvalidInput

# Column widths the values are compared with: Agent.slug / Budget.name (64), model ids and user ids (200).
SLUG_MAX_LENGTH = 64
IDENTIFIER_MAX_LENGTH = 200
# JSON Schema (ECMA 262) and Python's re both read this as "no NUL anywhere".
NO_NUL_PATTERN = "^[^\\u0000]*$"


def reject_nul(value: str) -> str:
    """A pydantic validator for text from outside: no NUL (PostgreSQL text cannot hold it) and no
    lone surrogate (it cannot be encoded as UTF-8, so it could not be stored or compared either)."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogate)") from None
    return value


def check_text(value: str, *, field: str) -> str:
    """reject_nul for code that is not a pydantic validator: InvalidInput (422) naming `field`."""
    try:
        return reject_nul(value)
    except ValueError as exc:
        raise InvalidInput(f"{field} {exc}", code="invalid_field") from None


def refuse_repeated_form_fields(request: HttpRequest, names: Iterable[str]) -> None:
    """A multipart or form field sent more than once is refused: Django keeps every value and ninja
    reads one of them, and which one the sender meant cannot be known."""
    for name in names:
        if len(request.POST.getlist(name)) + len(request.FILES.getlist(name)) > 1:
            raise InvalidInput(f"{name}: sent more than once; send each multipart field once", code="invalid_field")


def _text(*, max_length: int, min_length: int = 1, description: str | None = None) -> Any:
    return Annotated[
        str,
        Field(min_length=min_length, max_length=max_length, pattern=None, description=description,
              json_schema_extra={"pattern": NO_NUL_PATTERN}),
        AfterValidator(reject_nul),
    ]


# An agent slug or a budget name.
Slug = _text(max_length=SLUG_MAX_LENGTH)
# An experiment key, a model id, a user id, an event id, a suite slug, a status filter.
Identifier = _text(max_length=IDENTIFIER_MAX_LENGTH)


def bounded_text(max_length: int, *, min_length: int = 1) -> Any:
    """Free text of at most `max_length` characters, refused with NUL or a lone surrogate."""
    return _text(max_length=max_length, min_length=min_length)


# A primary key in a path: positive and within PostgreSQL's bigint, so a huge number is a 422, not
# an "integer out of range" from the database.
MAX_OBJECT_ID = 2**63 - 1
ObjectId = Annotated[int, Field(ge=1, le=MAX_OBJECT_ID)]


# --- money ----------------------------------------------------------------------------------------
# A dollar amount from outside: a decimal string ("2.40") or a JSON number, 0 ≤ x < 10^10 with at most
# six decimals — what the ledger's numeric(16, 6) holds. A string is checked as text before any
# Decimal arithmetic, so "1e1000000" is a 422 instead of a decimal.Overflow; a number (a float, so
# inexact anyway) is rounded to six decimals.
MONEY_INTEGER_DIGITS = 10
MONEY_DECIMALS = 6
MONEY_PATTERN = rf"^[0-9]{{1,{MONEY_INTEGER_DIGITS}}}(\.[0-9]{{1,{MONEY_DECIMALS}}})?$"
MAX_MONEY_NUMBER = 9_999_999_999
_MONEY_RE = re.compile(MONEY_PATTERN)
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_DECIMALS)
_MONEY_HELP = (f'a decimal string such as "2.40" (at most {MONEY_INTEGER_DIGITS} digits before the point and '
               f"{MONEY_DECIMALS} after) or a number from 0 to {MAX_MONEY_NUMBER}")


def parse_money(value: Any) -> Decimal:
    """`value` as a Decimal of dollars, or ValueError saying what is accepted."""
    if isinstance(value, str):
        if not _MONEY_RE.fullmatch(value):
            raise ValueError(f"must be {_MONEY_HELP}")
        return Decimal(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"must be {_MONEY_HELP}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be {_MONEY_HELP}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"must be {_MONEY_HELP}")
    if not 0 <= value <= MAX_MONEY_NUMBER:
        raise ValueError(f"must be {_MONEY_HELP}")
    return Decimal(repr(value) if isinstance(value, float) else value).quantize(_MONEY_QUANTUM, rounding=ROUND_HALF_UP)


class DecimalDigits(TypedDict):
    """The precision of a money column, spread into a DecimalField: `DecimalField(**LEDGER_MONEY)`.
    Typed so that mypy checks the spread against the two keyword arguments it fills."""

    max_digits: int
    decimal_places: int


MoneyUSD = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    WithJsonSchema({
        "anyOf": [
            {"type": "string", "pattern": MONEY_PATTERN},
            {"type": "number", "minimum": 0, "maximum": MAX_MONEY_NUMBER},
        ],
        "description": f"Dollars: {_MONEY_HELP}",
    }),
]
