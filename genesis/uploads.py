"""The one limit on the files a request may carry — datasets, training files, benchmark suites, prompt
sets, through the admin or the API: `settings.AUDIT_MAX_UPLOAD_BYTES` of file content per request.

Django writes a multipart file to memory or a temporary file while it parses the body, before any view
or service runs, so a limit checked there comes after the disk has filled (a 300 MB upload against a
1 MiB limit was refused only once 300 MB sat in the temporary directory). `UploadLimitHandler`, first in
`FILE_UPLOAD_HANDLERS`, refuses earlier:

- before a byte is read, when the Content-Length is more than a request within the limit can be (the
  files' limit, plus the most its other fields may hold — DATA_UPLOAD_MAX_MEMORY_SIZE — plus the
  multipart envelope);
- while reading, as soon as the files received pass the limit (a body larger than its Content-Length
  is never read past it: Django's LimitedStream): the handlers after it never see the bytes over the
  limit, and what they stored of the request's files is removed at once.

Either way it raises `UploadTooLarge`; the API answers 413 `payload_too_large` (genesis/api.py), the
admin its 413 page (`upload_too_large_or_bad_request`, handler400 in genesis/urls.py).
"""

from __future__ import annotations

from typing import IO

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.defaults import bad_request

# Boundaries and part headers around the fields and files of a multipart body: a few hundred bytes a
# part, and Django takes at most DATA_UPLOAD_MAX_NUMBER_FIELDS + DATA_UPLOAD_MAX_NUMBER_FILES parts.
MULTIPART_ENVELOPE_BYTES = 1 << 20
ADVICE = "split the file, or ask an operator to raise the limit"


def size_text(size: int) -> str:
    """1536 → "1.5 KiB", 300_000_000 → "286.103 MiB"; below a KiB in bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


class UploadTooLarge(RequestDataTooBig):
    """A request whose files pass the upload limit. A RequestDataTooBig, so Django treats it as it
    treats a body over DATA_UPLOAD_MAX_MEMORY_SIZE: the request's POST and FILES stay empty afterwards."""


class UploadLimitHandler(FileUploadHandler):
    """Counts the file bytes of one request (every file together) and stops the upload once they pass
    `settings.AUDIT_MAX_UPLOAD_BYTES`. Must come first in FILE_UPLOAD_HANDLERS: the handlers after it
    store what it lets through."""

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.limit: int = settings.AUDIT_MAX_UPLOAD_BYTES
        self.received = 0

    def handle_raw_input(
        self, input_data: IO[bytes], META: dict[str, str], content_length: int, boundary: str, encoding: str | None = None,
    ) -> None:
        fields_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if fields_limit is None:
            return None  # other fields are unbounded, so no length is too long before reading
        most = self.limit + fields_limit + MULTIPART_ENVELOPE_BYTES
        if content_length > most:
            raise UploadTooLarge(
                f"the request body ({size_text(content_length)}) is larger than files within the upload limit of "
                f"{size_text(self.limit)} (AUDIT_MAX_UPLOAD_BYTES) can make; {ADVICE}"
            )
        return None  # within bounds: the parser goes on, and the files are counted as they arrive

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            self._discard_stored_files()
            raise UploadTooLarge(
                f"{self.field_name}: the upload is larger than the limit of {size_text(self.limit)} "
                f"(AUDIT_MAX_UPLOAD_BYTES, the most file content one request may carry); {ADVICE}"
            )
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the handlers after this one make the file

    def _discard_stored_files(self) -> None:
        """The parser closes the files it completed when the upload fails, but not the one being
        written: its temporary file would stay on disk as long as the request object lives."""
        for handler in self.request.upload_handlers if self.request is not None else ():
            if handler is not self:
                handler.upload_interrupted()


def upload_too_large_or_bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400 (genesis/urls.py): an upload over the limit gets a 413 page saying the limit (Django
    answers every RequestDataTooBig raised outside a view's own handling with 400); anything else
    Django's 400 page."""
    if not isinstance(exception, UploadTooLarge):
        return bad_request(request, exception)
    user = getattr(request, "user", None)
    context = {
        **(admin.site.each_context(request) if getattr(user, "is_staff", False) else {}),
        "title": "Too large", "reason": str(exception),
    }
    return TemplateResponse(request, "413.html", context, status=413)
