"""Which URLs and addresses the document fetcher may reach (no I/O here).

A URL must be http(s), without credentials, with a host. An address must be public:
loopback, private, link-local (169.254.169.254 is the cloud metadata service), shared
(100.64/10), multicast, reserved and unspecified addresses are refused, IPv6 too, and IPv4
addresses carried inside IPv6 ones (mapped, 6to4, Teredo, NAT64) by the IPv4 they carry - unless
``settings.DOCS_FETCH_ALLOW_PRIVATE`` (intranets, tests). The fetcher applies
``address_blocked`` to every address a host name resolves to, at connection time
(``knowledge.docs.fetch``), and ``url_checked`` to every URL and redirect before it is asked
for, which covers hosts written as IP addresses (those are never resolved).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

from knowledge.docs.errors import BlockedAddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = ("http", "https")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: an IPv4 address in the low 32 bits


def private_allowed() -> bool:
    return bool(settings.DOCS_FETCH_ALLOW_PRIVATE)


def ip_blocked(ip: IPAddress) -> bool:
    """True for an address documents may not be fetched from (whatever the setting)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and ip_blocked(embedded):
            return True
    # is_global is False for every special-purpose block (RFC 6890 and its IPv6 twin), which
    # includes the private, loopback, link-local, shared, reserved and unspecified ones.
    return not ip.is_global or ip.is_multicast


def address_blocked(host: str) -> bool:
    """``host`` is an IP address (an IPv6 one may carry a %scope) that is refused now."""
    if private_allowed():
        return False
    return ip_blocked(ipaddress.ip_address(host))


def url_checked(url: str) -> SplitResult:
    """``url`` split, if the fetcher may ask for it; else BlockedAddress saying why."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as err:
        raise BlockedAddress(f"not a valid URL: {url!r} ({err})") from err
    if parts.scheme.lower() not in SCHEMES:
        raise BlockedAddress(f"only http and https URLs can be fetched, not {url!r}")
    if parts.username is not None or parts.password is not None:
        raise BlockedAddress(f"URLs with a user name or password are refused: {_safe(parts)}")
    host = parts.hostname
    if not host:
        raise BlockedAddress(f"the URL has no host: {url!r}")
    if _ip_literal(host) is None and _legacy_ipv4(host):
        raise BlockedAddress(f"{host} is not a canonical IPv4 address: {_safe(parts)}")
    literal = _ip_literal(host)
    if literal is not None and not private_allowed() and ip_blocked(literal):
        raise BlockedAddress(f"{host} is a loopback, private or reserved address: {_safe(parts)}")
    return parts


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _legacy_ipv4(host: str) -> bool:
    """``2130706433``, ``127.1``, ``0x7f.0.0.1``: forms that C resolvers read as IPv4 addresses."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def _safe(parts: SplitResult) -> str:
    """The URL without its credentials, for messages an admin sees."""
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl()
