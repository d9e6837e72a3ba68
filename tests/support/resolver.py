"""A resolver for tests: answers from a fixed table so no test ever asks a real DNS server."""

import socket

TABLE: dict[str, list[str]] = {
    "localhost": ["127.0.0.1", "::1"],
    "localhost.localdomain": ["127.0.0.1"],
    "app.localhost": ["127.0.0.1"],
    "metadata.internal.test": ["169.254.169.254"],
    "intranet.test": ["10.1.2.3"],
    "mixed.test": ["93.184.215.14", "192.168.1.1"],
    "hooks.example.com": ["93.184.215.14"],
    "api.example.org": ["2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
}


def local_resolve(host: str, port: int) -> list[str]:
    try:
        return list(TABLE[host.lower().rstrip(".")])
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test resolver's table") from None


TABLE.update(
    {
        "loopback.test": ["127.0.0.1"],
        "loopback6.test": ["::1"],
        "zero.test": ["0.0.0.0"],
        "mapped.test": ["::ffff:127.0.0.1"],
        # Loopback first: if the guard ever let a mixed answer through, the connection would
        # land on this machine's canary, never on the public address.
        "mixed-loopback.test": ["127.0.0.1", "93.184.215.14"],
    }
)

calls: list[str] = []


def counting_resolve(host: str, port: int) -> list[str]:
    """The table resolver, recording each call (in this process)."""
    calls.append(host)
    return local_resolve(host, port)


def public_resolve(host: str, port: int) -> list[str]:
    """The table, and a public address for every other name: for the fuzz, which never sends."""
    try:
        return local_resolve(host, port)
    except socket.gaierror:
        return ["93.184.215.14"]


TABLE.update(
    {
        # Loopback names for the attack replay's send-time vectors (scripts/attack_replay.py).
        "loopback-range.test": ["127.0.0.53"],
        "both-loopbacks.test": ["::1", "127.0.0.1"],
    }
)


def loopback_resolve(host: str, port: int) -> list[str]:
    """The table, refusing to answer for any name with an answer off this machine: a worker that
    only ever resolves to loopback cannot be talked into sending anywhere else."""
    answers = local_resolve(host, port)
    if not all(answer in ("::", "0.0.0.0", "::1") or answer.startswith(("127.", "::ffff:127.")) for answer in answers):
        raise socket.gaierror(socket.EAI_NONAME, f"{host} resolves off loopback: not answered here")
    return answers
