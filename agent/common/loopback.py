"""Whether a host is this machine's loopback: traffic to it never crosses a network.

The agent warns about a plain-http destination and the receiver about a plaintext
listener only when the address is not loopback.
"""

import ipaddress


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1`` (brackets allowed); a name is not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
