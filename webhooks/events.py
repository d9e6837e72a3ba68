"""Event names and the patterns subscriptions use to choose them."""

import re

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

EVENT_NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
EVENT_PATTERN_RE = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")
# The same grammar, as the OpenAPI document states it (no anchors needed there, but harmless).
EVENT_PATTERN_REGEX = EVENT_PATTERN_RE.pattern


class FullMatchValidator(RegexValidator):
    """RegexValidator on the whole value: Python's `$` also matches before a final newline, ECMA's does not."""

    def __call__(self, value) -> None:
        if not isinstance(value, str) or not self.regex.fullmatch(value):
            raise ValidationError(self.message, code=self.code, params={"value": value})


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
