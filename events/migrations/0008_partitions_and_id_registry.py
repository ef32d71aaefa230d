"""Issue 19: the id registry, and the event table partitioned by month on PostgreSQL.

The registry (`EventIdentity`) is filled with every stored and pruned id and becomes
the identity: the event table's unique constraint on `uid` goes (a unique index of a
partitioned table must hold the partition key). On PostgreSQL the table is then rebuilt
as `PARTITION BY RANGE (ts)` (events/partitions.py): a default partition, this month and
the next ones, and each month the rows already hold many of; the rows move with their
ids, the id sequence goes on where it was, and the primary key becomes (id, ts). Django's
model state keeps `id` as the primary key: nothing else changes for it. SQLite keeps one
plain table (and the registry as its identity too).
"""

import django.db.models.deletion
from django.db import migrations, models

OLD = "events_event_unpartitioned"


def fill_registry(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events_eventidentity (uid, ts)"
            " SELECT uid, ts FROM (SELECT uid, ts FROM events_event UNION ALL SELECT uid, ts FROM events_prunedevent) ids"
            " WHERE true ON CONFLICT (uid) DO NOTHING"
        )


def partition_events(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from events.partitions import DEFAULT, MIN_ROWS, Month, months_holding

    import time

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, conrelid::regclass::text FROM pg_constraint"
            " WHERE confrelid = 'events_event'::regclass AND contype = 'f'"
        )
        if referencing := cursor.fetchall():  # a foreign key to a partitioned table needs its partition key
            raise RuntimeError(f"foreign keys reference events_event: {referencing}")
        cursor.execute(f"ALTER TABLE events_event RENAME TO {OLD}")
        cursor.execute(
            f"CREATE TABLE events_event (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)"
            " PARTITION BY RANGE (ts)"
        )
        cursor.execute(f"CREATE TABLE {DEFAULT} PARTITION OF events_event DEFAULT")
        month = Month.of(time.time())
        months = {month}
        for _ in range(3):
            month = month.next()
            months.add(month)
        months.update(months_holding(OLD, MIN_ROWS))
        for month in sorted(months):
            cursor.execute(
                f"CREATE TABLE {month.name} PARTITION OF events_event FOR VALUES FROM (%s) TO (%s)",
                [month.start, month.end],
            )
        cursor.execute(f"INSERT INTO events_event OVERRIDING SYSTEM VALUE SELECT * FROM {OLD}")
        # The new identity goes on where the old one was.
        cursor.execute("SELECT pg_get_serial_sequence('events_event', 'id'), pg_get_serial_sequence(%s, 'id')", [OLD])
        new_sequence, old_sequence = cursor.fetchone()
        cursor.execute(f"SELECT last_value, is_called FROM {old_sequence}")
        last_value, is_called = cursor.fetchone()
        cursor.execute("SELECT setval(%s, %s, %s)", [new_sequence, last_value, is_called])
        cursor.execute(f"DROP TABLE {OLD}")
        cursor.execute(f"ALTER SEQUENCE {new_sequence} RENAME TO events_event_id_seq")
        cursor.execute("ALTER TABLE events_event ADD CONSTRAINT events_event_pkey PRIMARY KEY (id, ts)")
    event = apps.get_model("events", "Event")
    for index in event._meta.indexes:  # on the partitioned table: built on every partition
        schema_editor.add_index(event, index)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("ANALYZE events_event")


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0007_pruned_events"),
    ]

    operations = [
        # Created by hand: Django gives a varchar primary key a second, `varchar_pattern_ops`,
        # index on PostgreSQL (for LIKE), which nothing runs and every claimed id would pay for.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="EventIdentity",
                    fields=[
                        ("uid", models.CharField(max_length=255, primary_key=True, serialize=False)),
                        ("ts", models.FloatField()),
                    ],
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "CREATE TABLE events_eventidentity (uid varchar(255) NOT NULL PRIMARY KEY, ts double precision NOT NULL)",
                    "DROP TABLE events_eventidentity",
                ),
            ],
        ),
        migrations.RunPython(fill_registry, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="event",
            name="event_uid_unique",
        ),
        migrations.AlterField(
            model_name="stanza",
            name="event",
            field=models.OneToOneField(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                primary_key=True,
                serialize=False,
                to="events.event",
            ),
        ),
        migrations.RunPython(partition_events),
    ]
