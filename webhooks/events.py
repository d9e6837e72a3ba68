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


# ASIRI's own operational events (about the tenant's subscriptions) and test sends: tenants cannot
# publish these, and `*` does not pick up the operational ones: a subscription names them explicitly.
OPERATIONAL_PREFIX = "asiri."
RESERVED_PREFIXES = (OPERATIONAL_PREFIX, "webhook.")


# An event name outside the reserved namespaces: what a tenant may publish, as the document states it.
PUBLISHABLE_EVENT_NAME_REGEX = r"^(?!(asiri|webhook)\.)" + EVENT_NAME_RE.pattern.removeprefix("^")


def is_reserved(event_type: str) -> bool:
    return event_type.startswith(RESERVED_PREFIXES)


def pattern_matches(pattern: str, event_type: str) -> bool:
    """`*` matches every event but ASIRI's operational ones, `invoice.*` anything below `invoice`,
    anything else itself.

    An endpoint built for `*` expects the tenant's own events: notices about its subscriptions
    arrive only where `asiri.*` or an exact `asiri.` name asks for them.
    """
    if pattern == "*":
        return not event_type.startswith(OPERATIONAL_PREFIX)
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def normalise_patterns(patterns: list[str]) -> list[str]:
    """Duplicates collapsed, first occurrence kept, so clients see the order they sent."""
    return list(dict.fromkeys(patterns))
