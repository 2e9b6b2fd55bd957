"""Shared fixtures: certificates made by the tests themselves."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import trustme


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A private certificate authority, trusted only through ``ca_file``."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The private CA's certificate as a PEM file."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def issue(ca: trustme.CA, *, days_valid: float, days_ago: float = 1.0) -> trustme.LeafCert:
    """A certificate for localhost and 127.0.0.1, valid from ``days_ago`` for ``days_valid``."""
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=days_ago)
    return ca.issue_cert(
        "localhost", "127.0.0.1",
        not_before=not_before, not_after=not_before + datetime.timedelta(days=days_valid),
    )
