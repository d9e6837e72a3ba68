from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api import StrictBooleanField, StrictCharField, StrictIntegerField, StrictSerializerMixin
from core.openapi import NO_NUL
from webhooks import headers as header_rules
from webhooks.catalog import deprecated_matches, deprecated_names, unmatched_patterns
from webhooks.events import EVENT_PATTERN_REGEX, FullMatchValidator
from webhooks.filter_fields import PayloadFilterField
from webhooks.models import Subscription
from webhooks.validators import MAX_URL_LENGTH, validate_webhook_url, webhook_url_pattern

MAX_PATTERNS = 100
MAX_METADATA_ENTRIES = 20
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
MAX_RATE_LIMIT = 10_000


class WebhookUrlField(StrictCharField):
    def __init__(self, **kwargs) -> None:
        super().__init__(max_length=MAX_URL_LENGTH, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data) -> str:
        url = super().to_internal_value(data)
        try:
            validate_webhook_url(url)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return url


class WebhookUrlFieldSchema(OpenApiSerializerFieldExtension):
    """The URL grammar the API enforces, which depends on whether http:// is allowed here."""

    target_class = WebhookUrlField
    priority = 1  # before core.openapi.NoNulStringField, which matches it too

    def map_serializer_field(self, auto_schema, direction) -> dict:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        schema["pattern"] = webhook_url_pattern()
        return schema


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": MAX_METADATA_ENTRIES,
        "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE, "pattern": NO_NUL},
        "propertyNames": {"maxLength": MAX_METADATA_KEY, "pattern": NO_NUL},
        "description": (
            f"Your own labels: at most {MAX_METADATA_ENTRIES} string values, keys up to "
            f"{MAX_METADATA_KEY} characters, values up to {MAX_METADATA_VALUE}."
        ),
    }
)
class MetadataField(serializers.DictField):
    def __init__(self, **kwargs) -> None:
        super().__init__(
            child=serializers.CharField(max_length=MAX_METADATA_VALUE, allow_blank=True, trim_whitespace=False),
            **kwargs,
        )

    def to_internal_value(self, data) -> dict[str, str]:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object of string values.")
        if len(data) > MAX_METADATA_ENTRIES:
            raise serializers.ValidationError(f"At most {MAX_METADATA_ENTRIES} entries.")
        for key in data:
            if len(key) > MAX_METADATA_KEY:
                raise serializers.ValidationError(f"Keys must be at most {MAX_METADATA_KEY} characters: {key[:50]!r}.")
            if "\x00" in key:
                raise serializers.ValidationError("Keys must not contain NUL characters.")
        for key, value in data.items():
            if not isinstance(value, str):
                raise serializers.ValidationError({key: ["Must be a string."]})
        return super().to_internal_value(data)


_HEADERS_DESCRIPTION = (
    f"Headers every attempt carries, as name → value: at most {header_rules.MAX_HEADERS}, names RFC 9110 "
    f"tokens up to {header_rules.MAX_NAME} characters, values up to {header_rules.MAX_VALUE} printable ASCII "
    "characters. The service's own headers (`webhook-*`, `content-type`, `user-agent`) always win; `host`, "
    "`content-length`, `content-encoding`, `transfer-encoding`, `connection`, `keep-alive`, `te`, `trailer`, "
    "`upgrade`, `expect`, `proxy-*` and two names differing only in case are refused. Values under "
    "`authorization`, `cookie` and any name containing `key`, `token`, `secret`, `password` or `auth` are "
    "write-only: every response shows them as null."
)


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": header_rules.MAX_HEADERS,
        "propertyNames": {"maxLength": header_rules.MAX_NAME, "pattern": header_rules.NAME_PATTERN},
        "additionalProperties": {
            "type": "string",
            "maxLength": header_rules.MAX_VALUE,
            "pattern": header_rules.VALUE_PATTERN,
        },
        "description": (
            f"{_HEADERS_DESCRIPTION} An update replaces the whole object; there, a write-only header given as "
            "null keeps the value it has (null for one it does not have is refused)."
        ),
    }
)
class HeadersField(serializers.Field):
    """Custom request headers as written: a name may map to null only to keep a write-only value
    (webhooks.services checks there is one)."""

    def to_internal_value(self, data) -> dict[str, str | None]:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object of header names to values.")
        if len(data) > header_rules.MAX_HEADERS:
            raise serializers.ValidationError(f"At most {header_rules.MAX_HEADERS} headers.")
        problems, seen = [], {}
        for name, value in data.items():
            problem = header_rules.name_problem(name)
            if problem is None and name.lower() in seen:
                problem = f"Header {name!r} is given twice (as {seen[name.lower()]!r} too): names ignore case."
            if problem is None and value is None:
                if not header_rules.is_secret(name):
                    problem = f"Header {name!r} needs a value: only a write-only header may be null (to keep it)."
            elif problem is None and not isinstance(value, str):
                problem = f"The value of header {name!r} must be a string."
            elif problem is None:
                problem = header_rules.value_problem(name, value)
            if problem:
                problems.append(problem)
            seen.setdefault(name.lower(), name)
        if problems:
            raise serializers.ValidationError(problems)
        return dict(data)

    def to_representation(self, value: dict[str, str]) -> dict[str, str | None]:
        return header_rules.shown(value)


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": ["string", "null"]},
        "description": _HEADERS_DESCRIPTION,
    }
)
class HeadersShownField(serializers.ReadOnlyField):
    """Custom request headers as every read shows them: write-only values as null."""

    def to_representation(self, value: dict[str, str]) -> dict[str, str | None]:
        return header_rules.shown(value)


def event_patterns_field(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=StrictCharField(
            max_length=200,
            trim_whitespace=False,  # " invoice.*" is not a pattern, as the document says
            validators=[
                FullMatchValidator(
                    EVENT_PATTERN_REGEX,
                    "Must be an event name (invoice.paid), a prefix wildcard (invoice.*) or *.",
                )
            ],
        ),
        min_length=1,
        max_length=MAX_PATTERNS,
        help_text=(
            "Event types to receive: exact names (`invoice.paid`), prefix wildcards (`invoice.*`) "
            "or `*` for everything. Duplicates are collapsed."
        ),
        **kwargs,
    )


class SubscriptionSerializer(serializers.ModelSerializer):
    """A subscription as every read returns it: never with its secret."""

    events = serializers.ListField(child=serializers.CharField())
    metadata = MetadataField()
    headers = HeadersShownField()
    filter = serializers.JSONField(help_text="The payload filter, or null.")
    deprecated_events = serializers.SerializerMethodField(
        help_text="Deprecated event types (GET /v1/event-types) that `events` matches: move off them."
    )

    class Meta:
        model = Subscription
        fields = (
            "id",
            "url",
            "events",
            "description",
            "active",
            "metadata",
            "headers",
            "rate_limit",
            "filter",
            "deprecated_events",
            "created_at",
            "updated_at",
            "disabled_reason",
        )
        read_only_fields = fields

    def get_deprecated_events(self, subscription: Subscription) -> list[str]:
        # Read once per response, however many subscriptions a page holds.
        if "deprecated_event_types" not in self.context:
            self.context["deprecated_event_types"] = deprecated_names()
        return deprecated_matches(subscription.events, self.context["deprecated_event_types"])


class SubscriptionCreatedSerializer(SubscriptionSerializer):
    """The create response: the only time the signing secret is shown."""

    class Meta(SubscriptionSerializer.Meta):
        fields = (*SubscriptionSerializer.Meta.fields, "secret")
        read_only_fields = fields


class SubscriptionWriteSerializer(StrictSerializerMixin, serializers.Serializer):
    read_only_names = (*SubscriptionCreatedSerializer.Meta.fields, "previous_secret", "deleted_at")

    url = WebhookUrlField(
        help_text=(
            "Where events are POSTed. https only in production; a host that does not resolve to a public "
            "address is refused, with the same answer whether it resolves privately or not at all."
        )
    )
    events = event_patterns_field(default=lambda: ["*"])
    description = StrictCharField(max_length=1000, allow_blank=True, default="", trim_whitespace=False)
    active = StrictBooleanField(default=True)
    metadata = MetadataField(default=dict)
    headers = HeadersField(default=dict)
    rate_limit = StrictIntegerField(
        min_value=1,
        max_value=MAX_RATE_LIMIT,
        allow_null=True,
        default=None,
        help_text=(
            "At most this many deliveries are sent to the endpoint in any one second, by all workers "
            "together; the rest wait their turn. null (the default) means no limit."
        ),
    )
    filter = PayloadFilterField(allow_null=True, default=None)

    def validate_events(self, patterns: list[str]) -> list[str]:
        unmatched = unmatched_patterns(patterns)
        if unmatched:
            raise serializers.ValidationError(
                [f"{p!r} matches no registered event type (GET /v1/event-types lists them)." for p in unmatched]
            )
        return patterns
