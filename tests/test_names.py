"""The one rule for check names and agent ids, and the UUID rule."""

from __future__ import annotations

import pytest

from agent.common.names import is_uuid, is_valid_name


@pytest.mark.parametrize("name", ["web", "db-1", "a.b_c", "A" * 64, "9lives"])
def test_plain_names_are_valid(name: str) -> None:
    assert is_valid_name(name)


@pytest.mark.parametrize("name", [
    "", "web\n", "web\r\n", "\nweb", "-web", ".web", "my db", "a/b", "..", "A" * 65, "wéb",
    "web\x00",
])
def test_anything_else_is_not(name: str) -> None:
    assert not is_valid_name(name)


def test_uuid_is_matched_whole() -> None:
    uuid = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
    assert is_uuid(uuid) and is_uuid(uuid.upper())
    assert not is_uuid(uuid + "\n")
    assert not is_uuid(uuid[:-1])
    assert not is_uuid(f"x{uuid}")
