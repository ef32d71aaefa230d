"""manage.py export_events [filters]: the stored records as received, as NDJSON on stdout."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.hostile import text_argument
from reports import exports, selectors
from reports.filters import EventFilter

FILTERS = ("site", "session", "family", "type", "category", "name", "actor", "since", "until")


class Command(BaseCommand):
    help = (
        "Write the stored records of the matching events to stdout as NDJSON, oldest first, each as it was "
        "received (a record that spanned several lines is put on one), streaming in bounded memory; "
        "`import_jsonl` reads the output back. Filters are those of GET /api/events/; the count goes to stderr."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        for name in FILTERS:
            field = EventFilter.base_filters[name]
            parser.add_argument(
                f"--{name}", type=text_argument, default=None, help=f"{field.extra.get('help_text') or field.label}"
            )

    def handle(self, *args: object, **options: object) -> None:
        data = {name: options[name] for name in FILTERS if options[name] not in (None, "")}
        filterset = EventFilter(data=data, queryset=selectors.events())
        if not filterset.is_valid():
            raise CommandError("; ".join(f"--{name}: {' '.join(errors)}" for name, errors in filterset.errors.items()))
        out = self.stdout._out
        binary = getattr(out, "buffer", None)  # the records' own UTF-8 bytes, whatever the locale
        exported = 0
        for line in exports.records(filterset.qs):
            if binary is not None:
                binary.write(line.encode())
            else:
                out.write(line)
            exported += 1
        out.flush()
        self.stderr.write(f"exported {exported} events")
