"""JSON text nested to any depth, built without recursion (json.dumps gives up near 1,000 levels)."""

from __future__ import annotations

DEPTHS = [65, 312, 936, 5000]  # the limit + 1, and the depths the security review used


def nested(kind: str, levels: int) -> str:
    """`levels` containers, each holding the next: {"k": {"k": … "leaf" …}} or [[… "leaf" …]]."""
    opening, closing = ('{"k": ', "}") if kind == "dict" else ("[", "]")
    return opening * levels + '"leaf"' + closing * levels


def assert_no_traceback_logged(caplog) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
    assert noisy == [], [r.getMessage() for r in noisy]
