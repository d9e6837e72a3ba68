"""The suite's own guarantee: in-process code connects to loopback only (tests/conftest.py)."""

import socket

import pytest


def test_a_connection_to_anything_but_loopback_is_stopped_and_recorded(connections):
    # UDP: connect() sends no packet, so even a broken guard would not contact the address.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, pytest.raises(OSError, match="only to loopback"):
        probe.connect(("192.0.2.1", 9))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.connect(("::1", 9))
    assert connections.hosts == ["192.0.2.1", "::1"]
    assert connections.stopped == ["192.0.2.1"]
    connections.stopped.clear()  # recorded as it should be: not a failure of this test
