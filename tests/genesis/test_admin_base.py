"""genesis/admin_base.py: an admin that uses the service add page without saying how to add is refused
when its class is defined, not when someone first submits the form."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse

from genesis.admin_base import ServiceAddFormMixin


def test_an_add_page_without_its_service_call_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="without add_through_service and add_done"):
        type("NoHooksAdmin", (ServiceAddFormMixin,), {})

    with pytest.raises(TypeError, match="NoServiceAdmin uses ServiceAddFormMixin without add_through_service$"):
        class NoServiceAdmin(ServiceAddFormMixin):
            def add_done(self, request: HttpRequest, added: Any) -> HttpResponse:
                return HttpResponse()


def test_an_add_page_with_both_hooks_is_accepted() -> None:
    class CompleteAdmin(ServiceAddFormMixin):
        def add_through_service(self, request: HttpRequest, form: Any) -> Any:
            return None

        def add_done(self, request: HttpRequest, added: Any) -> HttpResponse:
            return HttpResponse()

    assert callable(CompleteAdmin.add_through_service) and callable(CompleteAdmin.add_done)
