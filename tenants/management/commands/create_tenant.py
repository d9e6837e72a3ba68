from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug

from tenants.models import Tenant


class Command(BaseCommand):
    help = "Create a tenant; an existing slug is left unchanged."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")

    def handle(self, *args, slug: str, name: str, **options) -> None:
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(f"{slug!r} is not a valid slug (letters, digits, - and _).") from None
        tenant, created = Tenant.objects.get_or_create(slug=slug, defaults={"name": name or slug})
        if created:
            self.stdout.write(f"Created tenant {tenant.slug}.")
        else:
            self.stdout.write(f"Tenant {tenant.slug} already exists; nothing changed.")
