"""Connection failures say why, against real refused ports on loopback."""

from __future__ import annotations

import httpx
import pytest
import trio

from agent.common.connect_errors import describe
from tests.netutil import refused_port


async def test_a_refused_tcp_connect_says_refused() -> None:
    with refused_port() as port:
        with pytest.raises(OSError) as caught:
            await trio.open_tcp_stream("127.0.0.1", port)
    assert describe(caught.value) == (
        f"all attempts to connect to 127.0.0.1:{port} failed "
        f"(127.0.0.1:{port}: Connection refused)"
    )


async def test_an_httpx_connect_error_says_refused() -> None:
    with refused_port() as port:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.get(f"http://127.0.0.1:{port}/")
    assert describe(caught.value).endswith(f"(127.0.0.1:{port}: Connection refused)")


def test_an_error_that_says_why_is_left_alone() -> None:
    assert describe(ValueError("bad thing")) == "bad thing"
