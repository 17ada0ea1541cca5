"""URL guard verdicts, table-driven. A fake resolver maps names to addresses: no packet is ever sent."""

from __future__ import annotations

import ipaddress

import pytest

from extractors.url_guard import check_url, classify_address, parse_ipv4_loose

FAKE_DNS = {
    "public.example": ["93.184.216.34"],
    "public6.example": ["2606:4700::6810:84e5"],
    "rebind.example": ["93.184.216.34", "10.0.0.5"],  # one private answer poisons the lot
    "loopback.example": ["127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "mapped.example": ["::ffff:169.254.169.254"],
    "corpus.groundgen.invalid": ["127.0.0.1"],
}


def fake_resolver(host: str, port: int) -> list[str]:
    host = host.rstrip(".")  # as the system resolver does
    if host not in FAKE_DNS:
        raise OSError(f"no such host {host}")
    return FAKE_DNS[host]


# (address, reason): every address class, IPv4 and IPv6, including forms that embed IPv4
ADDRESS_CLASSES = [
    ("93.184.216.34", "public"),
    ("8.8.8.8", "public"),
    ("2606:4700::6810:84e5", "public"),
    ("127.0.0.1", "loopback_address"),
    ("127.255.255.254", "loopback_address"),
    ("::1", "loopback_address"),
    ("10.1.2.3", "private_address"),
    ("172.16.0.1", "private_address"),
    ("172.31.255.255", "private_address"),
    ("192.168.1.1", "private_address"),
    ("fd12:3456::1", "private_address"),
    ("fc00::1", "private_address"),
    ("fec0::1", "private_address"),  # deprecated site-local
    ("169.254.1.1", "link_local_address"),
    ("fe80::1", "link_local_address"),
    ("224.0.0.1", "multicast_address"),
    ("239.255.255.250", "multicast_address"),
    ("ff02::1", "multicast_address"),
    ("100.64.0.1", "carrier_grade_nat_address"),
    ("100.127.255.255", "carrier_grade_nat_address"),
    ("0.0.0.0", "unspecified_address"),
    ("0.1.2.3", "unspecified_address"),
    ("::", "unspecified_address"),
    ("240.0.0.1", "reserved_address"),
    ("255.255.255.255", "reserved_address"),
    ("192.0.2.1", "reserved_address"),  # TEST-NET-1
    ("198.18.0.1", "reserved_address"),  # benchmarking
    ("2001:db8::1", "reserved_address"),  # documentation
    ("169.254.169.254", "metadata_address"),
    ("169.254.170.2", "metadata_address"),
    ("100.100.100.200", "metadata_address"),
    ("fd00:ec2::254", "metadata_address"),
    # IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo
    ("::ffff:127.0.0.1", "loopback_address"),
    ("::ffff:10.0.0.1", "private_address"),
    ("::ffff:169.254.169.254", "metadata_address"),
    ("::ffff:8.8.8.8", "public"),
    ("::127.0.0.1", "loopback_address"),
    ("::10.0.0.1", "private_address"),
    ("64:ff9b::a9fe:a9fe", "metadata_address"),  # NAT64 of 169.254.169.254
    ("64:ff9b::7f00:1", "loopback_address"),
    ("64:ff9b:1::c0a8:101", "private_address"),
    ("64:ff9b::808:808", "public"),
    ("2002:7f00:1::1", "loopback_address"),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::1", "metadata_address"),
    ("2002:c0a8:0101::1", "private_address"),
    ("2002:808:808::1", "public"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback_address"),  # Teredo client 127.0.0.1
]


@pytest.mark.parametrize(("address", "reason"), ADDRESS_CLASSES)
def test_classify_address(address: str, reason: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(("address", "reason"), ADDRESS_CLASSES)
def test_resolved_address_class_decides_the_verdict(address: str, reason: str) -> None:
    verdict = check_url("https://host.example/x", resolver=lambda host, port: [address])
    assert (verdict.allowed, verdict.reason) == (reason == "public", reason)
    assert verdict.addresses == [ipaddress.ip_address(address)]


# URL spellings: literal hosts in every form a parser might accept
URL_CASES = [
    ("http://public.example/", True, "public", ["93.184.216.34"]),
    ("https://PUBLIC.example:8443/a?b#c", True, "public", ["93.184.216.34"]),
    ("http://public6.example/", True, "public", ["2606:4700::6810:84e5"]),
    ("http://93.184.216.34/", True, "public", ["93.184.216.34"]),
    ("http://127.0.0.1/", False, "loopback_address", ["127.0.0.1"]),
    ("http://2130706433/", False, "loopback_address", ["127.0.0.1"]),  # decimal
    ("http://0177.0.0.1/", False, "loopback_address", ["127.0.0.1"]),  # octal
    ("http://0x7f.0.0.1/", False, "loopback_address", ["127.0.0.1"]),  # hex part
    ("http://0x7f000001/", False, "loopback_address", ["127.0.0.1"]),  # hex whole
    ("http://127.1/", False, "loopback_address", ["127.0.0.1"]),  # short form
    ("http://127.0.1/", False, "loopback_address", ["127.0.0.1"]),
    ("http://0/", False, "unspecified_address", ["0.0.0.0"]),
    ("http://2852039166/", False, "metadata_address", ["169.254.169.254"]),
    ("http://0251.0376.0251.0376/", False, "metadata_address", ["169.254.169.254"]),
    ("http://0xa9.0xfe.0xa9.0xfe/", False, "metadata_address", ["169.254.169.254"]),
    ("http://169.254.169.254/latest/meta-data/", False, "metadata_address", ["169.254.169.254"]),
    ("http://[::1]:8080/", False, "loopback_address", ["::1"]),
    ("http://[::ffff:127.0.0.1]/", False, "loopback_address", ["::ffff:127.0.0.1"]),
    ("http://[::ffff:a9fe:a9fe]/", False, "metadata_address", ["::ffff:169.254.169.254"]),
    ("http://[fd00:ec2::254]/", False, "metadata_address", ["fd00:ec2::254"]),
    ("http://[fe80::1%25eth0]/", False, "link_local_address", ["fe80::1"]),
    ("http://user:pass@127.0.0.1/", False, "loopback_address", ["127.0.0.1"]),
    ("http://127.0.0.1./", False, "loopback_address", ["127.0.0.1"]),
    ("http://loopback.example/", False, "loopback_address", ["127.0.0.1"]),
    ("http://metadata.example/", False, "metadata_address", ["169.254.169.254"]),
    ("http://mapped.example/", False, "metadata_address", ["::ffff:169.254.169.254"]),
    ("http://rebind.example/", False, "private_address", ["93.184.216.34", "10.0.0.5"]),
    ("http://metadata.google.internal/computeMetadata/v1/", False, "metadata_host", []),
    ("http://METADATA.google.internal./", False, "metadata_host", []),
    ("http://no-such-host.example/", False, "unresolvable_host", []),
    ("ftp://public.example/", False, "bad_scheme", []),
    ("file:///etc/passwd", False, "bad_scheme", []),
    ("gopher://127.0.0.1:70/", False, "bad_scheme", []),
    ("javascript:alert(1)", False, "bad_scheme", []),
    ("//public.example/", False, "bad_scheme", []),
    ("http:///path", False, "missing_host", []),
    ("http://[::1/", False, "malformed_url", []),
    ("http://public.example:99999/", False, "malformed_url", []),
    ("http://[zz::1]/", False, "malformed_url", []),
]


@pytest.mark.parametrize(("url", "allowed", "reason", "addresses"), URL_CASES)
def test_url_verdicts(url: str, allowed: bool, reason: str, addresses: list[str]) -> None:
    verdict = check_url(url, resolver=fake_resolver)
    assert (verdict.allowed, verdict.reason) == (allowed, reason)
    assert verdict.addresses == [ipaddress.ip_address(a) for a in addresses]


ALLOW_CASES = [
    # (url, allow, allowed, reason)
    ("http://127.0.0.1:8080/", ["127.0.0.1:8080"], True, "allowlisted"),
    ("http://127.0.0.1:8081/", ["127.0.0.1:8080"], False, "loopback_address"),
    ("http://127.0.0.2:8080/", ["127.0.0.1:8080"], False, "loopback_address"),
    ("http://2130706433:8080/", ["127.0.0.1:8080"], True, "allowlisted"),  # same address, same port
    ("http://[::1]:8080/", ["127.0.0.1:8080"], False, "loopback_address"),
    ("http://[::1]:8080/", ["[::1]:8080"], True, "allowlisted"),
    ("http://10.2.3.4/", ["10.0.0.0/8"], True, "allowlisted"),
    ("http://10.2.3.4/", ["10.0.0.0/16"], False, "private_address"),
    ("http://169.254.169.254/", ["169.254.169.254/32"], True, "allowlisted"),  # explicit CIDR wins
    ("http://corpus.groundgen.invalid/", ["corpus.groundgen.invalid"], True, "allowlisted"),
    ("http://corpus.groundgen.invalid:81/", ["corpus.groundgen.invalid:80"], False, "loopback_address"),
    ("http://Corpus.Groundgen.Invalid./", ["corpus.groundgen.invalid"], True, "allowlisted"),
    ("http://metadata.example/", ["metadata.example"], False, "metadata_address"),  # names never unlock it
    ("http://public.example/", ["127.0.0.1"], True, "public"),
]


@pytest.mark.parametrize(("url", "allow", "allowed", "reason"), ALLOW_CASES)
def test_allowlist(url: str, allow: list[str], allowed: bool, reason: str) -> None:
    verdict = check_url(url, resolver=fake_resolver, allow=allow)
    assert (verdict.allowed, verdict.reason) == (allowed, reason)


def test_connect_to_override_is_checked_like_a_resolved_address() -> None:
    connect_to = {"corpus.groundgen.invalid:80": "127.0.0.1:5555"}
    refused = check_url("http://corpus.groundgen.invalid/", resolver=fake_resolver, connect_to=connect_to)
    assert (refused.allowed, refused.reason, refused.connect_port) == (False, "loopback_address", 5555)
    allowed = check_url(
        "http://corpus.groundgen.invalid/a",
        resolver=fake_resolver,
        connect_to=connect_to,
        allow=["127.0.0.1:5555"],
    )
    assert (allowed.allowed, allowed.reason) == (True, "allowlisted")
    assert (allowed.host, allowed.port, allowed.connect_port) == ("corpus.groundgen.invalid", 80, 5555)
    assert allowed.addresses == [ipaddress.ip_address("127.0.0.1")]


def test_resolver_receives_idna_host_and_default_port() -> None:
    seen = []

    def resolver(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return ["93.184.216.34"]

    assert check_url("https://bücher.example/", resolver=resolver).allowed
    assert seen == [("xn--bcher-kva.example", 443)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0x7F.0x0.0x0.0x1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("192.168.257", "192.168.1.1"),
        ("4294967295", "255.255.255.255"),
        ("4294967296", None),
        ("256.1.1.1", None),
        ("1.2.3.4.5", None),
        ("08.1.1.1", None),  # not octal
        ("example.com", None),
        ("1.2.3.com", None),
        ("", None),
    ],
)
def test_parse_ipv4_loose(text: str, expected: str | None) -> None:
    parsed = parse_ipv4_loose(text)
    assert (str(parsed) if parsed else None) == expected
