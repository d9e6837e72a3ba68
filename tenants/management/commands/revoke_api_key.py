from django.core.management.base import BaseCommand, CommandError

from tenants.models import ApiKey


class Command(BaseCommand):
    help = "Revoke an API key, given the whole key or the part the admin shows (asiri_<lookup>). Final."

    def add_arguments(self, parser) -> None:
        parser.add_argument("key")

    def handle(self, *args, key: str, **options) -> None:
        api_key = ApiKey.objects.find(key.strip())
        if api_key is None:
            raise CommandError("Unknown API key.")
        api_key.revoke()
        self.stdout.write(f"Revoked {api_key.visible_part}.")
