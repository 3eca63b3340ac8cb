"""Existing bots get answer vectors and a calibration that uses them.

Raising every bot's knowledge-base revision makes each server process rebuild the bot's
index on its next question, which stores the missing answer vectors
(``knowledge.services.entries_embed``) and asks for a new calibration at the new revision
(the stored one serves meanwhile).
"""

from django.db import migrations
from django.db.models import F


def bump_revisions(apps, schema_editor):
    Bot = apps.get_model("chatbot", "Bot")
    Bot.objects.update(kb_revision=F("kb_revision") + 1)


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0005_answer_embedding"),
        ("chatbot", "0010_documents"),
    ]

    operations = [migrations.RunPython(bump_revisions, migrations.RunPython.noop)]
