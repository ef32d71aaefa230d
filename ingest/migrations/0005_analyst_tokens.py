# Analysts' tokens move from DRF's authtoken (the token kept in plain text) to
# django-rest-knox (only a digest kept). Tokens issued before keep working: each
# is stored as knox stores its own, then the plain-text table is dropped.

from django.db import migrations
from knox.crypto import hash_token

OLD_TABLE = "authtoken_token"


def digest_old_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    AuthToken = apps.get_model("knox", "AuthToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {OLD_TABLE}")
        rows = cursor.fetchall()
    AuthToken.objects.bulk_create(
        [AuthToken(digest=hash_token(key), token_key=key[:15], user_id=user_id, created=created, expiry=None)
         for key, user_id, created in rows],
        ignore_conflicts=True,
    )
    # created is auto_now_add: keep the original dates.
    for key, _, created in rows:
        AuthToken.objects.filter(digest=hash_token(key)).update(created=created)
    schema_editor.execute(f"DROP TABLE {OLD_TABLE}")


class Migration(migrations.Migration):

    dependencies = [
        ('ingest', '0004_batch_failed_status'),
        ('knox', '0009_extend_authtoken_field'),
    ]

    operations = [
        migrations.CreateModel(
            name='AnalystToken',
            fields=[
            ],
            options={
                'verbose_name': 'analyst token',
                'proxy': True,
                'indexes': [],
                'constraints': [],
            },
            bases=('knox.authtoken',),
        ),
        migrations.RunPython(digest_old_tokens, migrations.RunPython.noop),
    ]
