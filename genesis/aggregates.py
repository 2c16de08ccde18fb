"""Database aggregates that give the same answer on PostgreSQL and on the embedded SQLite."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Q, Sum, Value
from django.db.models.functions import Coalesce


class DecimalTotal(Coalesce):
    """COALESCE(SUM(column), 0) of a decimal column, exact to the column's decimal places.

    SQLite (the embedded `make run`) adds decimals as floats and Django keeps 15 significant digits of
    the result, so a build's $0.69078900 came back as 0.690789000000001 and was shown so. The sum is
    rounded back to the column's places here, once, for every caller; on PostgreSQL it is already exact
    and the rounding changes nothing."""

    def __init__(self, column: str, *, filter: Q | None = None) -> None:  # noqa: A002 - Django's own name
        super().__init__(Sum(column, filter=filter), Value(Decimal(0)))

    def get_db_converters(self, connection: Any) -> list[Any]:
        return [*super().get_db_converters(connection), self._exact]

    def _exact(self, value: Any, expression: Any, connection: Any) -> Decimal:
        places = self.get_source_expressions()[0].output_field.decimal_places
        return Decimal(value).quantize(Decimal(1).scaleb(-places))
