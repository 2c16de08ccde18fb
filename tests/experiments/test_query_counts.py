"""Query counts of the experiments admin's lists: a list costs the same queries with a few rows as with
many (tests/query_counts.py)."""

from __future__ import annotations

from itertools import count

import pytest

from experiments.models import DataDeletion
from tests.factories import UserFactory
from tests.query_counts import assert_same_queries_with_more_rows

pytestmark = pytest.mark.django_db

_numbers = count()


def test_the_data_deletion_list_reads_who_deleted_with_the_list(client):
    """Second review: each row's actor was read by a query of its own (6 queries with one row, 11 with six)."""
    client.force_login(UserFactory(username="root", is_superuser=True))

    def erasure_by_someone() -> None:
        DataDeletion.objects.create(kind=DataDeletion.Kind.ERASURE, actor=UserFactory(username=f"dpo{next(_numbers)}"))

    def read():
        response = client.get("/admin/experiments/datadeletion/")
        assert response.status_code == 200
        return response

    erasure_by_someone()
    page = assert_same_queries_with_more_rows(read, lambda: [erasure_by_someone() for _ in range(5)])
    assert page.content.decode().count(">dpo") == 6
