"""The attack replay's own safety rule: every send-time target it submits lands on this machine if the
guard fails, so a failure is a canary hit and never traffic to another address."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.resolver import loopback_resolve

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "attack_replay.py"
spec = importlib.util.spec_from_file_location("attack_replay", SCRIPT)
replay = sys.modules.setdefault("attack_replay", importlib.util.module_from_spec(spec))
spec.loader.exec_module(replay)
# Registered only while it loads (its dataclasses look themselves up there): Hypothesis draws constants from
# every local module in sys.modules, and this one's hundreds of URLs would change what the fuzz generates.
del sys.modules["attack_replay"]


def lands_on_this_machine(host: str) -> bool:
    host = host.strip("[]").rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.ip_address(socket.inet_aton(host))  # 127.1, 0x7f000001, 0177.0.0.1, 2130706433…
        except OSError:
            return all(lands_on_this_machine(answer) for answer in loopback_resolve(host, 443))
    address = getattr(address, "ipv4_mapped", None) or address
    return address.is_loopback or address.is_unspecified


@pytest.mark.parametrize("url", replay.send_urls(9))
def test_every_send_time_target_is_loopback(url):
    assert lands_on_this_machine(urlsplit(url).hostname or "")


def test_the_worker_resolver_answers_for_no_name_off_this_machine():
    for name in ("hooks.example.com", "mixed-loopback.test", "intranet.test", "metadata.internal.test"):
        with pytest.raises(socket.gaierror):
            loopback_resolve(name, 443)
    assert loopback_resolve("both-loopbacks.test", 443) == ["::1", "127.0.0.1"]


def test_it_replays_at_least_the_reviews_url_forms():
    urls = replay.ssrf_urls()
    assert len(urls) == len(set(urls)) >= 183
    assert "https://[::ffff:0:7f00:1]/hook" in urls and "https://[64:ff9b:1::7f00:1]/hook" in urls
