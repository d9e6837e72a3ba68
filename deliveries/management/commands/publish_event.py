import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from deliveries.serializers import EventPublishSerializer
from deliveries.services import IdempotencyConflict, event_publish
from tenants.models import Tenant
from webhooks.catalog import EventRejected


class Command(BaseCommand):
    help = "Publish an event for a tenant; prints the event id alone on the last line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("event_type")
        parser.add_argument("--data", default="{}", help="The event's data, a JSON object.")
        parser.add_argument("--idempotency-key")

    def handle(self, *args, slug: str, event_type: str, data: str, idempotency_key: str | None, **options) -> None:
        tenant = Tenant.objects.filter(slug=slug, is_active=True).first()
        if tenant is None:
            raise CommandError(f"Unknown or inactive tenant {slug!r}.")
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise CommandError(f"--data is not valid JSON: {exc}") from None
        payload = {"type": event_type, "data": parsed}
        if idempotency_key is not None:
            payload["idempotency_key"] = idempotency_key
        serializer = EventPublishSerializer(data=payload)
        if not serializer.is_valid():
            problems = "; ".join(
                f"{field}: {' '.join(map(str, errors))}" for field, errors in serializer.errors.items()
            )
            raise CommandError(problems)
        try:
            event = event_publish(tenant=tenant, event_type=event_type, data=parsed, idempotency_key=idempotency_key)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        except EventRejected as exc:
            raise CommandError(f"Refused by the event catalog: {exc.errors}") from None
        except IdempotencyConflict as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"Published {event.type} to {event.delivery_count} subscription(s).")
        self.stdout.write(event.id)
