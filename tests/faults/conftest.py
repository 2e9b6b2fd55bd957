"""``slow`` fault scenarios run only when asked for (``make faults``).

Asked for means ``--run-slow`` on the pytest command line or ``HEARTWIRE_RUN_SLOW=1``
in the environment (what ``make faults`` sets); the ``slow`` marker itself is
registered in pyproject.toml.
"""

from __future__ import annotations

import os

import pytest

from tests.faults.delivery_support import SLOW_ENV_VAR


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run the slow fault scenarios")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or os.environ.get(SLOW_ENV_VAR) == "1":
        return
    skip = pytest.mark.skip(reason="slow scenario: run with `make faults`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
