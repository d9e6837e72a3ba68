import ipaddress

import pytest

from deliveries import http
from tests.support import resolver
from webhooks.addresses import (
    BlockedAddress,
    ResolutionFailed,
    check_addresses,
    embedded_ipv4,
    is_blocked,
    parse_literal,
    resolve,
)
from webhooks.models import Subscription

# Forms of private addresses the security review got past create (issue #10), and a few more.
EVERY_FORM = [
    "::ffff:0:127.0.0.1",  # IPv4-translated
    "64:ff9b:1::7f00:1",  # local-use NAT64
    "64:ff9b:1::808:808",  # local-use NAT64 goes where this network's translator says, whatever it carries
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (0x7f000001 ^ 0xffffffff)
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8: Teredo is not global either
    "::ffff:7f00:1",  # IPv4-mapped, in hex
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::",  # 6to4
    "2002:a9fe:a9fe::1",  # 6to4, the metadata service
    "64:ff9b::a00:1",  # NAT64, 10.0.0.1
    "::ffff:0:a9fe:a9fe",  # IPv4-translated, the metadata service
    "fe80::1",
    "fc00::1",
    "::",
    "0.0.0.0",
    "100.64.0.1",
    "192.0.0.1",
    "198.18.0.1",
]

BLOCKED = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.0.9",
    "169.254.169.254",
    "169.254.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.0.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:8.8.8.8",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::",
    "2002:c0a8:101::1",
    "2001:db8::1",
    "3fff::1",  # the newer documentation block: the attack replay got it past create
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",
    "ff02::1",
    "::127.0.0.1",
    *EVERY_FORM,
]
ALLOWED = [
    "8.8.8.8",
    "93.184.215.14",
    "1.1.1.1",
    "100.63.255.255",
    "100.128.0.1",
    "172.32.0.1",
    "2606:4700::1111",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "::ffff:0:808:808",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_it_blocks_private_and_reserved_addresses(address):
    assert is_blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_it_allows_public_addresses(address):
    assert not is_blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("literal", "meaning"),
    [
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[::1]", "::1"),
        ("10.1", "10.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
    ],
)
def test_it_reads_every_notation_a_resolver_accepts(literal, meaning):
    assert parse_literal(literal) == ipaddress.ip_address(meaning)


@pytest.mark.parametrize("name", ["hooks.example.com", "localhost-not", "1.2.3.4.5", "0x", "example"])
def test_it_treats_names_as_names(name):
    assert parse_literal(name) is None


def test_it_resolves_names_with_the_configured_resolver():
    assert [str(a) for a in resolve("localhost", 443)] == ["127.0.0.1", "::1"]
    with pytest.raises(ResolutionFailed):
        resolve("unknown.test", 443)


def test_it_refuses_when_any_resolved_address_is_blocked():
    with pytest.raises(BlockedAddress) as refused:
        check_addresses("mixed.test", resolve("mixed.test", 443))
    assert str(refused.value) == "Cannot be delivered to: does not resolve to a public address."
    check_addresses("hooks.example.com", resolve("hooks.example.com", 443))


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:0:127.0.0.1", "127.0.0.1"),
        ("::10.0.0.1", "10.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b:1::7f00:1", "127.0.0.1"),
        ("2002:c0a8:101:1234::1", "192.168.1.1"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # RFC 4380's own example
        ("2606:4700::1111", None),
        ("fe80::1", None),
    ],
)
def test_it_finds_the_ipv4_address_an_ipv6_address_carries(address, carried):
    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert found == (None if carried is None else ipaddress.IPv4Address(carried))


def url_for(address: str) -> str:
    return f"https://[{address}]/" if ":" in address else f"https://{address}/"


@pytest.fixture
def named(monkeypatch):
    """A name the test resolver answers with `address`."""

    def name(address: str) -> str:
        monkeypatch.setitem(resolver.TABLE, "target.test", [address])
        return "https://target.test/"

    return name


@pytest.mark.parametrize("as_name", [False, True], ids=["literal", "name"])
@pytest.mark.parametrize("address", EVERY_FORM)
def test_every_form_is_refused_at_create(api, named, address, as_name):
    url = named(address) if as_name else url_for(address)
    response = api.post("/v1/webhooks/subscriptions", {"url": url}, format="json")
    assert response.status_code == 400, (url, response.content)
    assert list(response.json()) == ["url"]
    assert Subscription.objects.count() == 0


@pytest.mark.parametrize("as_name", [False, True], ids=["literal", "name"])
@pytest.mark.parametrize("address", EVERY_FORM)
def test_every_form_is_refused_at_patch(api, alice, make_subscription, named, address, as_name):
    subscription = make_subscription(alice)
    url = named(address) if as_name else url_for(address)
    response = api.patch(f"/v1/webhooks/subscriptions/{subscription.id}", {"url": url}, format="json")
    assert response.status_code == 400, (url, response.content)
    assert list(response.json()) == ["url"]
    assert Subscription.objects.get(pk=subscription.id).url == subscription.url


@pytest.mark.parametrize("as_name", [False, True], ids=["literal", "name"])
@pytest.mark.parametrize("address", EVERY_FORM)
def test_every_form_is_refused_at_send_without_connecting(named, address, as_name, connections):
    url = named(address) if as_name else url_for(address)
    result = http.send(url, b"{}", {})
    assert result.status_code is None and result.error.startswith("Refused:"), result
    assert connections.hosts == []
