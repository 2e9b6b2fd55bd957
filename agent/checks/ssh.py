"""The SSH probe: reads the server's identification string (RFC 4253 section 4.2).

A server speaks first: ``SSH-2.0-OpenSSH_9.2p1 Debian-2`` (``SSH-1.99-`` from a
server that also takes protocol 1), possibly after other lines. Nothing is sent,
so no key exchange starts. Facts: ``ssh_protocol``, ``ssh_software``.
Reasons: ``answered``, ``bad_banner`` (not an SSH-2 identification string).
"""

from __future__ import annotations

import re

from agent.checks.exchange import Exchange, run_exchange
from agent.checks.steps import Expect, run_steps
from agent.model import Observation, Target

BAD_BANNER = "bad_banner"

STEPS = (
    Expect(
        what="the SSH identification string",
        # RFC 4253 allows other lines before it; each line is at most 255 bytes.
        end=re.compile(rb"^SSH-"),
        pattern=re.compile(rb"^SSH-(?P<protocol>2\.0|1\.99)-(?P<software>[^\s\r\n]+)", re.M),
        mismatch=BAD_BANNER,
        limit=1024,
        facts=(("ssh_protocol", "protocol"), ("ssh_software", "software")),
    ),
)


async def _dialogue(exchange: Exchange) -> Observation:
    return await run_steps(exchange, STEPS)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects and reads the SSH identification string within ``timeout`` seconds."""
    return await run_exchange(target, timeout, _dialogue)
