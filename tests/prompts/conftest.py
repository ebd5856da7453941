from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from distillapp.accounts.models import Role
from tests.conftest import _member


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content)


def parquet_bytes(columns: dict[str, list]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, row_group_size=3)
    return buf.getvalue()


@pytest.fixture
def adam_client(adam):
    from tests.conftest import login

    return login(adam)


@pytest.fixture
def vera_client(vera):
    from tests.conftest import login

    return login(vera)


@pytest.fixture
def charlie_client(charlie):
    from tests.conftest import login

    return login(charlie)


@pytest.fixture
def member(org):
    return lambda name, role=Role.VIEWER: _member(org, name, role)
