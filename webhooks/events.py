"""Event names and the patterns subscriptions use to choose them."""

import re

EVENT_NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
EVENT_PATTERN_RE = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")
# The same grammar, as the OpenAPI document states it (no anchors needed there, but harmless).
EVENT_PATTERN_REGEX = EVENT_PATTERN_RE.pattern


def pattern_matches(pattern: str, event_type: str) -> bool:
    """`*` matches everything, `invoice.*` anything below `invoice`, anything else itself."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def normalise_patterns(patterns: list[str]) -> list[str]:
    """Duplicates collapsed, first occurrence kept, so clients see the order they sent."""
    return list(dict.fromkeys(patterns))
