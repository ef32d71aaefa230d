from django.db import migrations


class Migration(migrations.Migration):
    """Raw batches no longer carry import ranges (0005 moved them to ImportRange).

    A migration of its own: on PostgreSQL the table cannot be altered in the
    transaction that updated its rows (their deferred foreign-key checks are pending).
    """

    dependencies = [("ingest", "0005_import_ranges")]

    operations = [migrations.RemoveField(model_name="rawbatch", name="next_offset")]
