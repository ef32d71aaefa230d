"""Bulk imports of event files (`manage.py import_jsonl`).

- `identity`: recognising a file again, to resume its import;
- `sequential`: the import in this process, chunk after chunk, each committed with its checkpoint;
- `ranges`: a file cut into byte ranges that Celery workers import (`--parallel`);
- `tasks`: the Celery tasks and the enqueueing of ranges;
- `parallel`: the command's side of a parallel import (plan, wait, finish).
"""
