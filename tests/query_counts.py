"""The one helper of the query-count tests (Zulip's assert_database_query_count, turned to rows): a
page is read with a few rows and again with many, and must cost the same number of queries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext


def queries_of(read: Callable[[], Any]) -> tuple[int, Any]:
    """How many queries `read()` issues, and what it returned."""
    with CaptureQueriesContext(connection) as captured:
        result = read()
    return len(captured), result


def assert_same_queries_with_more_rows(read: Callable[[], Any], add_rows: Callable[[], Any]) -> Any:
    """`read()` issues as many queries after `add_rows()` as before: none per row. Returns the last
    result (a response, say) for the test's own checks. A first read, not counted, fills the caches a
    process fills once (content types, the API key)."""
    read()
    few, _ = queries_of(read)
    add_rows()
    many, result = queries_of(read)
    assert many == few, f"{few} queries with a few rows, {many} with more: some query runs per row"
    return result
