"""The URL safety guard: may a model-chosen URL be fetched, and at which addresses?

Pure core: `check_url` parses the URL, resolves the host with an injected resolver and classifies every
address. A URL is allowed only if *every* address it resolves to is public (or allowlisted); the
fetcher then connects to exactly those checked addresses, so a second DNS answer cannot sneak a private
address in (no DNS-rebinding gap).

Host spellings browsers and libc accept are parsed the way `inet_aton` does: `2130706433`, `0x7f.1`,
`0177.0.0.1`, `127.1` are all 127.0.0.1. IPv6 forms that embed an IPv4 address (IPv4-mapped
`::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4
`2002::/16`, Teredo) are judged by the embedded address as well.

Allowlist entries (`FetchConfig.allow_hosts`): a host name (`corpus.example`), a host name or IP with
a port (`127.0.0.1:8080`, `[::1]:8080`), or a CIDR (`10.0.0.0/8`). A host-name entry allows every
address class except cloud-metadata addresses; an IP/CIDR entry allows exactly the addresses it covers.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Reasons (machine-readable, stable): why a URL was refused, or "public" / "allowlisted" when allowed.
ALLOWED_REASONS = ("public", "allowlisted")

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS resolver
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "fd00:ec2::254",  # AWS IPv6 metadata
        "fd00:ec2::253",
    )
)
METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)

_CARRIER_GRADE_NAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_NAT64_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


@dataclass(frozen=True)
class GuardVerdict:
    allowed: bool
    reason: str
    addresses: list[IPAddress] = field(default_factory=list)
    host: str = ""  # the URL's host, lower-case, IDNA-encoded, without brackets
    port: int = 0  # the URL's port (default 80/443)
    connect_port: int = 0  # the port to connect to (differs from `port` under a connect-to override)


@dataclass(frozen=True)
class _AllowEntry:
    host: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None


def default_resolver(host: str, port: int) -> list[str]:
    """Resolve with the system resolver (blocking: call from a thread in async code)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def parse_ipv4_loose(text: str) -> ipaddress.IPv4Address | None:
    """Parse an IPv4 address the way inet_aton and WHATWG URL parsers do (decimal, octal, hex, short forms).

    Returns None when `text` is not such a spelling (i.e. it is a host name)."""
    parts = text.split(".")
    if parts and parts[-1] == "":  # a trailing dot is allowed
        parts = parts[:-1]
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if not part:
            return None
        try:
            if part.lower().startswith("0x"):
                number = int(part[2:], 16) if part[2:] else 0
            elif len(part) > 1 and part.startswith("0"):
                number = int(part, 8)
            elif part.isdigit():
                number = int(part, 10)
            else:
                return None
        except ValueError:
            return None
        numbers.append(number)
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for number in leading:
        value = value * 256 + number
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value)


def parse_host_address(host: str) -> IPAddress | None:
    """The IP address a URL host denotes literally (IPv6 without brackets, zone id dropped), else None."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            return None
    return parse_ipv4_loose(host)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo client)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    value = int(address)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (:: and ::1 are themselves)
        return ipaddress.IPv4Address(value)
    if any(address in network for network in _NAT64_NETWORKS):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def classify_address(address: IPAddress) -> str:
    """`public` or the reason an address must not be fetched from."""
    if address in METADATA_ADDRESSES:
        return "metadata_address"
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_unspecified:
            return "unspecified_address"
        if address.is_loopback:
            return "loopback_address"
        embedded = embedded_ipv4(address)
        if embedded is not None:
            embedded_class = classify_address(embedded)
            translated = (
                address.ipv4_mapped is not None
                or int(address) >> 32 == 0
                or any(address in network for network in _NAT64_NETWORKS)
            )
            # a translated form *is* its IPv4 address; 6to4/Teredo must also pass as IPv6 below
            if embedded_class != "public" or translated:
                return embedded_class
    elif address in _THIS_NETWORK:
        return "unspecified_address"
    if address.is_loopback:
        return "loopback_address"
    if address.is_link_local:
        return "link_local_address"
    if address.is_multicast:
        return "multicast_address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CARRIER_GRADE_NAT:
        return "carrier_grade_nat_address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "private_address"
    if any(address.version == n.version and address in n for n in _PRIVATE_NETWORKS):
        return "private_address"
    if address.is_reserved or not address.is_global:
        return "reserved_address"
    return "public"


def parse_allowlist(entries: Iterable[str]) -> list[_AllowEntry]:
    parsed = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            parsed.append(_AllowEntry(network=ipaddress.ip_network(entry, strict=False)))
            continue
        except ValueError:
            pass
        host, port = entry, None
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
        elif entry.count(":") == 1:
            host, _, port_text = entry.partition(":")
            port = int(port_text)
        address = parse_host_address(host)
        if address is not None:
            parsed.append(_AllowEntry(network=ipaddress.ip_network(address), port=port))
        else:
            parsed.append(_AllowEntry(host=host.rstrip("."), port=port))
    return parsed


def _normalize_host(hostname: str) -> str:
    host = hostname.lower()
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    return host


def _split_target(target: str) -> tuple[str, int | None]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if target.count(":") == 1:
        host, _, port = target.partition(":")
        return host, int(port)
    return target, None


def check_url(
    url: str,
    *,
    resolver: Resolver | None = None,
    allow: Iterable[str] = (),
    connect_to: Mapping[str, str] | None = None,
) -> GuardVerdict:
    """Decide whether `url` may be fetched. Never raises for bad input: the verdict says why not.

    `resolver(host, port) -> [ip, ...]` (default: the system resolver). `connect_to`: curl-style
    overrides `{"host:port": "ip:port"}`; the override target is checked like a resolved address.
    """
    resolver = resolver or default_resolver
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        hostname = parts.hostname
        port = parts.port
    except ValueError:
        return GuardVerdict(False, "malformed_url")
    if scheme not in ("http", "https"):
        return GuardVerdict(False, "bad_scheme")
    if not hostname:
        return GuardVerdict(False, "missing_host")
    try:
        host = _normalize_host(hostname)
    except UnicodeError:
        return GuardVerdict(False, "malformed_url")
    port = port or (443 if scheme == "https" else 80)
    if host.rstrip(".") in METADATA_HOSTS:
        return GuardVerdict(False, "metadata_host", host=host, port=port, connect_port=port)

    connect_host, connect_port = host, port
    override = (connect_to or {}).get(f"{host}:{port}")
    if override:
        target_host, target_port = _split_target(override.lower())
        connect_host, connect_port = target_host, target_port or port

    literal = parse_host_address(connect_host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    elif ":" in connect_host:
        return GuardVerdict(False, "malformed_url", host=host, port=port)
    else:
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolver(connect_host, connect_port)]
        except (OSError, UnicodeError, ValueError):
            return GuardVerdict(False, "unresolvable_host", host=host, port=port, connect_port=connect_port)
        if not addresses:
            return GuardVerdict(False, "unresolvable_host", host=host, port=port, connect_port=connect_port)

    entries = parse_allowlist(allow)
    name_allowed = any(
        e.host is not None and e.host == host.rstrip(".") and e.port in (None, port) for e in entries
    )
    verdict_reason = "public"
    for address in addresses:
        if any(
            e.network is not None
            and address.version == e.network.version
            and address in e.network
            and e.port in (None, connect_port)
            for e in entries
        ):
            verdict_reason = "allowlisted"
            continue
        reason = classify_address(address)
        if reason == "public":
            continue
        if name_allowed and reason != "metadata_address":
            verdict_reason = "allowlisted"
            continue
        return GuardVerdict(False, reason, addresses, host=host, port=port, connect_port=connect_port)
    return GuardVerdict(True, verdict_reason, addresses, host=host, port=port, connect_port=connect_port)
