"""Connection failures say why, against real refused ports on loopback."""

from __future__ import annotations

import re

import httpx
import pytest
import trio

from agent.common.connect_errors import describe
from tests.netutil import refused_port, refused_reason


async def test_a_refused_tcp_connect_says_refused() -> None:
    with refused_port() as port:
        with pytest.raises(OSError) as caught:
            await trio.open_tcp_stream("127.0.0.1", port)
    expected = refused_reason(port, f"all attempts to connect to 127.0.0.1:{port} failed ")
    assert re.fullmatch(expected, describe(caught.value))


async def test_an_httpx_connect_error_says_refused() -> None:
    with refused_port() as port:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.get(f"http://127.0.0.1:{port}/")
    assert re.search(refused_reason(port) + "$", describe(caught.value))


def test_an_error_that_says_why_is_left_alone() -> None:
    assert describe(ValueError("bad thing")) == "bad thing"
