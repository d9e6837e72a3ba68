import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tenants.models import SCOPES, ApiKey, Tenant

DEMO_SLUG = "demo"
DEMO_ADMIN = ("demo", "demo-password")


class Command(BaseCommand):
    help = "Local use only (DJANGO_DEBUG=1): a demo tenant, an API key and an admin login, printed every run."

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG:
            raise CommandError("demo_setup is for local use only: it needs DJANGO_DEBUG=1.")
        tenant, _ = Tenant.objects.get_or_create(slug=DEMO_SLUG, defaults={"name": "Demo tenant"})
        # Keys are stored hashed, so the demo key is kept in the local data folder to print it again.
        key_file = settings.DATA_DIR / "demo-api-key.txt"
        plain = key_file.read_text().strip() if key_file.exists() else ""
        api_key = ApiKey.objects.find(plain) if plain else None
        if api_key is None or not api_key.is_usable() or set(api_key.scopes) != set(SCOPES):
            _, plain = ApiKey.issue(tenant=tenant, name="demo", scopes=list(SCOPES))
            key_file.write_text(plain + "\n")
            key_file.chmod(0o600)
        User = get_user_model()
        if not User.objects.filter(username=DEMO_ADMIN[0]).exists():
            User.objects.create_superuser(DEMO_ADMIN[0], password=DEMO_ADMIN[1])
        port = os.environ.get("PORT", "8000")
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "ASIRI Webhooks is starting on the embedded default (SQLite + filesystem broker in var/).",
                    f"  API:      http://127.0.0.1:{port}/v1/webhooks/subscriptions",
                    f"  API docs: http://127.0.0.1:{port}/docs",
                    f"  Admin:    http://127.0.0.1:{port}/admin/",
                    f"            login {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]} (local demo only)",
                    f"  Demo API key (tenant '{DEMO_SLUG}'):",
                    f"    export ASIRI_API_KEY={plain}",
                    "",
                ]
            )
        )
