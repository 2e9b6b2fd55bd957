"""``slow`` fault scenarios run only with ``--run-slow`` (``make faults``)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run the slow fault scenarios")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a long fault scenario, run by `make faults`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow scenario: run with `make faults`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
