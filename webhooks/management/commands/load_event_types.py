import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.jsonfields import StrictJSONDecoder
from webhooks.catalog import CatalogFileError, event_types_load


class Command(BaseCommand):
    help = "Load the event catalog from a JSON file (an array of event types): an idempotent upsert."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--prune", action="store_true", help="Delete event types the file does not list.")

    def handle(self, *args, file: Path, prune: bool, **options) -> None:
        try:
            entries = json.loads(file.read_text(encoding="utf-8"), cls=StrictJSONDecoder)
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        except ValueError as exc:
            raise CommandError(f"{file} is not valid JSON: {exc}. Nothing was changed.") from None
        except RecursionError:
            raise CommandError(f"{file} nests too deep to read. Nothing was changed.") from None
        try:
            counts = event_types_load(entries, prune=prune, progress=self.stdout.write)
        except CatalogFileError as exc:
            raise CommandError(f"{file}: {exc} Nothing was changed.") from None
        self.stdout.write(", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
