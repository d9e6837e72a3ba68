"""Forwarded headers count only from ASIRI_TRUSTED_PROXIES: the scheme, the client address, and so HSTS."""

from __future__ import annotations

import json
import logging
from ipaddress import ip_network

import pytest
import requests
from django.test import RequestFactory

from asiri.logs import JsonFormatter
from asiri.proxies import client_address
from tests.support.processes import free_port, gunicorn, serves_healthz, wait_until
from tests.support.settings import start

PROXY = "10.0.0.2"


@pytest.fixture
def behind_a_proxy(settings) -> None:
    settings.ASIRI_TRUSTED_PROXIES = (ip_network("10.0.0.0/24"), ip_network("fd00::/64"))


def address(remote: str, forwarded_for: str | None = None, **headers: str) -> str | None:
    if forwarded_for is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return client_address(RequestFactory().get("/", REMOTE_ADDR=remote, **headers))


def test_without_trusted_proxies_the_client_is_the_socket_peer():
    assert address("203.0.113.9", "127.0.0.1") == "203.0.113.9"
    assert address(PROXY, "198.51.100.7") == PROXY
    for header in ("HTTP_X_REAL_IP", "HTTP_X_CLIENT_IP", "HTTP_TRUE_CLIENT_IP", "HTTP_CF_CONNECTING_IP"):
        assert address("203.0.113.9", **{header: "127.0.0.1"}) == "203.0.113.9"
    assert address("::ffff:203.0.113.9") == "203.0.113.9"


def test_behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_hop(behind_a_proxy):
    assert address(PROXY, "198.51.100.7") == "198.51.100.7"
    assert address(PROXY, "127.0.0.1, 198.51.100.7") == "198.51.100.7"  # the client wrote the left part
    assert address(PROXY, "198.51.100.7, 10.0.0.9") == "198.51.100.7"  # two proxies of ours
    assert address(PROXY, "198.51.100.7:5123") == "198.51.100.7"
    assert address(PROXY, "[2001:db8::7]:5123") == "2001:db8::7"
    assert address("fd00::2", "2001:db8::7") == "2001:db8::7"
    assert address(PROXY) == PROXY  # the proxy's own request (or one that set no header)
    assert address(PROXY, "198.51.100.7, unknown") == PROXY  # garbage: what our proxy saw last
    assert address(PROXY, "10.0.0.9") == "10.0.0.9"  # only trusted hops: the leftmost
    assert address(PROXY, "198.51.100.7", HTTP_X_REAL_IP="127.0.0.1") == "198.51.100.7"
    assert address("203.0.113.9", "198.51.100.7") == "203.0.113.9"  # not a proxy of ours


@pytest.fixture
def two_pages(alice, make_subscription) -> str:
    make_subscription(alice)
    make_subscription(alice)
    return "/v1/webhooks/subscriptions?limit=1"


def test_x_forwarded_proto_counts_only_from_a_trusted_proxy(api, two_pages, behind_a_proxy):
    spoofed = api.get(two_pages, REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_PROTO="https")
    assert spoofed.json()["next"].startswith("http://testserver/")
    assert "Strict-Transport-Security" not in spoofed
    proxied = api.get(two_pages, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_PROTO="https")
    assert proxied.json()["next"].startswith("https://testserver")
    assert proxied["Strict-Transport-Security"] == "max-age=31536000"
    assert api.get(two_pages, REMOTE_ADDR=PROXY).json()["next"].startswith("http://")


def test_an_ssl_redirect_spares_the_health_checks(api, two_pages, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert api.get(two_pages).status_code == 301
    assert api.get("/healthz").status_code == 200


def test_the_request_log_names_the_client_a_trusted_proxy_forwarded_for(api, two_pages, behind_a_proxy, caplog):
    with caplog.at_level(logging.INFO, logger="asiri.requests"):
        api.get(two_pages, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="127.0.0.1, 198.51.100.7")
        api.get(two_pages, REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="198.51.100.7")
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "asiri.requests"]
    assert [line["client"] for line in lines] == ["198.51.100.7", "203.0.113.9"]


def test_proxy_and_https_settings_default_to_trusting_no_proxy():
    result = start(
        "ASIRI_TRUSTED_PROXIES, settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "settings.SECURE_SSL_REDIRECT"
    )
    assert result.stdout.strip() == "() 31536000 False False"
    configured = start(
        "ASIRI_TRUSTED_PROXIES, settings.SECURE_HSTS_SECONDS, settings.SECURE_SSL_REDIRECT",
        ASIRI_TRUSTED_PROXIES="10.0.0.0/8, fd00::/8",
        ASIRI_HSTS_SECONDS="0",
        ASIRI_SSL_REDIRECT="1",
    )
    assert configured.stdout.strip() == "(IPv4Network('10.0.0.0/8'), IPv6Network('fd00::/8')) 0 True"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ASIRI_TRUSTED_PROXIES", "everyone"), ("ASIRI_HSTS_SECONDS", "-1"), ("ASIRI_SSL_REDIRECT", "maybe")],
)
def test_a_bad_proxy_or_https_setting_fails_at_start_naming_the_variable(variable, value):
    result = start(**{variable: value})
    assert result.returncode != 0 and variable in result.stderr


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_gunicorn_takes_no_scheme_header_from_a_peer_that_is_not_a_trusted_proxy():
    """gunicorn trusts loopback peers by default: the attack replay got HSTS and https links with these."""
    forged = [{"X-Forwarded-Proto": "https"}, {"X-Forwarded-Protocol": "ssl"}, {"X-Forwarded-Ssl": "on"}]
    for trusted, taken_for_https in (("", []), ("127.0.0.1/32,::1/128", [True, False, False])):
        port = free_port()
        with gunicorn(port, workers=1, ASIRI_TRUSTED_PROXIES=trusted):
            assert wait_until(lambda p=port: serves_healthz(p), timeout=30)
            hsts = [_hsts(port, headers) for headers in forged]
        assert hsts == (taken_for_https or [False, False, False]), trusted


def _hsts(port: int, headers: dict[str, str]) -> bool:
    response = requests.get(f"http://127.0.0.1:{port}/admin/login/", headers=headers, timeout=10)
    assert response.status_code == 200
    return "Strict-Transport-Security" in response.headers
