from django.db import migrations, models


class Migration(migrations.Migration):
    """The payload becomes the record's text as received (`raw`); line numbers 64-bit.

    On PostgreSQL both rewrite the event table (jsonb -> text keeps the JSON as
    jsonb normalized it; records stored from now on keep their own spelling).
    """

    dependencies = [("events", "0002_leaner_indexes")]

    operations = [
        migrations.RenameField("event", "payload", "raw"),
        migrations.AlterField("event", "raw", models.TextField()),
        migrations.AlterField("event", "line", models.PositiveBigIntegerField()),
    ]
