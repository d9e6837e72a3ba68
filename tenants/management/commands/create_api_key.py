from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tenants.models import ApiKey, Tenant


class Command(BaseCommand):
    help = "Create an API key for a tenant and print it (on the last line); it is never shown again."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--scopes", required=True, help="Comma-separated, e.g. webhooks:read,webhooks:write")
        parser.add_argument("--name", default="")
        parser.add_argument("--expires-in", type=int, metavar="DAYS")

    def handle(self, *args, slug: str, scopes: str, name: str, expires_in: int | None, **options) -> None:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"Unknown tenant {slug!r}.")
        if expires_in is not None and expires_in < 1:
            raise CommandError("--expires-in must be at least 1 day.")
        scope_list = [s.strip() for s in scopes.split(",") if s.strip()]
        if not scope_list:
            raise CommandError("--scopes needs at least one scope.")
        expires_at = timezone.now() + timedelta(days=expires_in) if expires_in else None
        try:
            api_key, plain = ApiKey.issue(tenant=tenant, scopes=scope_list, name=name, expires_at=expires_at)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"Created key {api_key.visible_part} for {tenant.slug} with scopes {', '.join(api_key.scopes)}."
        )
        self.stdout.write(plain)
