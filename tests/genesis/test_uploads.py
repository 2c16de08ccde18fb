"""genesis/uploads.py: a request's files may hold at most AUDIT_MAX_UPLOAD_BYTES, and an upload over it is
stopped while Django reads it — before a byte is read when its Content-Length says so, else as soon as
the file passes the limit — instead of after the whole file sat in the temporary directory (a 300 MB
upload against a 1 MiB limit grew it by 239 MB before the API answered 422). The API answers 413
`payload_too_large`, every admin form that takes a file a 413 page; both name the limit."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.urls import reverse

from audits.models import Dataset
from models_app.benchmarks.models import BenchmarkSuite
from models_app.finetuning.models import FineTuningJob, TrainingFile
from safety.models import PromptSet
from tests.factories import AgentFactory, UserFactory

pytestmark = pytest.mark.django_db

MiB = 1 << 20
BOUNDARY = "genesis-upload-test"
CHAT_LINE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


class MultipartBody(io.RawIOBase):
    """A multipart body made as the server reads it — a 300 MB upload without 300 MB in memory — that
    counts how much of it the server read (`position`)."""

    def __init__(self, *, fields: dict[str, str], files: dict[str, int]) -> None:
        super().__init__()
        self.parts: list[bytes | int] = []  # bytes as they are, an int: that many bytes of file content
        for name, value in fields.items():
            self.parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, size in files.items():
            self.parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jsonl"\r\n'
                              "Content-Type: application/jsonl\r\n\r\n".encode())
            self.parts += [size, b"\r\n"]
        self.parts.append(f"--{BOUNDARY}--\r\n".encode())
        self.length = sum(part if isinstance(part, int) else len(part) for part in self.parts)
        self.position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        end = self.length if size is None or size < 0 else min(self.length, self.position + size)
        out, start = bytearray(), 0
        for part in self.parts:
            part_length = part if isinstance(part, int) else len(part)
            lo, hi = max(self.position, start), min(end, start + part_length)
            if lo < hi:
                if isinstance(part, int):  # chat lines, cut where the read ends
                    offset = (lo - start) % len(CHAT_LINE)
                    out += (CHAT_LINE * ((hi - lo) // len(CHAT_LINE) + 2))[offset:offset + hi - lo]
                else:
                    out += part[lo - start:hi - start]
            start += part_length
        self.position += len(out)
        return bytes(out)

    def readline(self, size: int | None = -1) -> bytes:  # the multipart parser never asks; LimitedStream wants it
        return self.read(size)


def post_multipart(client, path: str, body: MultipartBody, **headers: str):
    return client.generic("POST", path, CONTENT_TYPE=f"multipart/form-data; boundary={BOUNDARY}",
                          CONTENT_LENGTH=str(body.length), **{"wsgi.input": body}, **headers)


@pytest.fixture
def upload_dirs(settings, tmp_path) -> Path:
    """Temporary upload files and stored datasets under tmp_path, so what an upload leaves is seen."""
    settings.MEDIA_ROOT = tmp_path / "media"
    temporary = tmp_path / "upload-tmp"
    temporary.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(temporary)
    settings.AUDIT_MAX_UPLOAD_BYTES = MiB
    return temporary


def test_an_api_upload_whose_length_is_over_the_limit_is_refused_before_its_body_is_read(client, api_key_for, upload_dirs):
    AgentFactory(slug="qa_agent")
    body = MultipartBody(fields={"agent": "qa_agent"}, files={"file": 300_000_000})
    response = post_multipart(client, "/api/v1/audits/datasets", body, HTTP_AUTHORIZATION=f"Bearer {api_key_for('qa_agent')}")
    assert response.status_code == 413, response.content
    assert response.json() == {
        "detail": "the request body (286.103 MiB) is larger than files within the upload limit of 1 MiB "
                  "(AUDIT_MAX_UPLOAD_BYTES) can make; split the file, or ask an operator to raise the limit",
        "code": "payload_too_large",
    }
    assert body.position == 0  # not a byte read, so not a byte written
    assert list(upload_dirs.iterdir()) == [] and not Dataset.objects.exists()


def test_an_api_upload_is_stopped_once_its_file_passes_the_limit_and_nothing_of_it_is_left(client, api_key_for, upload_dirs):
    # A Content-Length a request within the limit could have (other fields may hold up to 16 MiB): the
    # file itself is what passes the limit, and reading stops there.
    AgentFactory(slug="qa_agent")
    key = api_key_for("qa_agent")
    body = MultipartBody(fields={"agent": "qa_agent"}, files={"file": 8 * MiB})
    response = post_multipart(client, "/api/v1/audits/datasets", body, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 413, response.content
    assert response.json()["code"] == "payload_too_large"
    assert response.json()["detail"] == (
        "file: the upload is larger than the limit of 1 MiB (AUDIT_MAX_UPLOAD_BYTES, the most file content one "
        "request may carry); split the file, or ask an operator to raise the limit"
    )
    assert body.position < MiB + 256 * 1024  # the limit and a chunk or two, not the 8 MiB sent
    assert list(upload_dirs.iterdir()) == []  # the temporary file it had written is gone already
    assert not Dataset.objects.exists()

    # A file of exactly the limit is taken.
    exact = MultipartBody(fields={"agent": "qa_agent"}, files={"file": MiB})
    stored = post_multipart(client, "/api/v1/audits/datasets", exact, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert stored.status_code == 201, stored.content
    assert stored.json()["size_bytes"] == MiB


def test_a_key_less_upload_is_refused_before_its_body_is_read(client, upload_dirs):
    body = MultipartBody(fields={"agent": "qa_agent"}, files={"file": 8 * MiB})
    assert post_multipart(client, "/api/v1/audits/datasets", body).status_code == 401
    assert body.position == 0


ADMIN_FILE_FORMS = [
    ("admin:audits_dataset_add", "file", Dataset),
    ("admin:models_app_trainingfile_add", "file", TrainingFile),
    ("admin:models_app_finetuningjob_add", "training_upload", FineTuningJob),
    ("admin:models_app_benchmarksuite_import", "file", BenchmarkSuite),
    ("admin:safety_promptset_add", "file", PromptSet),
]


@pytest.mark.parametrize(("url_name", "field", "model"), ADMIN_FILE_FORMS, ids=[form[0].split(":")[1] for form in ADMIN_FILE_FORMS])
def test_every_admin_form_that_takes_a_file_stops_an_upload_over_the_limit(client, upload_dirs, url_name, field, model):
    AgentFactory(slug="qa_agent")
    client.force_login(UserFactory(username="root", is_superuser=True))
    body = MultipartBody(fields={"agent": "qa_agent", "slug": "suite", "kind": "borderline"}, files={field: 4 * MiB})
    response = post_multipart(client, reverse(url_name), body)
    assert response.status_code == 413
    html = response.content.decode()
    assert f"{field}: the upload is larger than the limit of 1 MiB (AUDIT_MAX_UPLOAD_BYTES" in html
    assert "Nothing was stored" in html
    assert body.position < MiB + 256 * 1024
    assert list(upload_dirs.iterdir()) == [] and not model.objects.exists()


def test_the_limit_holds_for_the_files_of_a_request_together(client, upload_dirs):
    # Two files of 0.6 MiB each: neither alone passes 1 MiB, together they do (a request may not carry
    # the limit once per file: Django takes up to 100 files a request).
    AgentFactory(slug="qa_agent")
    client.force_login(UserFactory(username="root", is_superuser=True))
    body = MultipartBody(fields={"agent": "qa_agent"}, files={"training_upload": 600 * 1024, "validation_upload": 600 * 1024})
    response = post_multipart(client, reverse("admin:models_app_finetuningjob_add"), body)
    assert response.status_code == 413
    assert "validation_upload: the upload is larger than the limit of 1 MiB" in response.content.decode()
    assert list(upload_dirs.iterdir()) == [] and not FineTuningJob.objects.exists()
