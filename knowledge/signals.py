"""Any change to an entry or a phrasing bumps its bot's knowledge-base revision, and once
committed, asks for a re-calibration in the background (knowledge.matching.calibrate_soon).
A source deleted (its passages with it) bumps the bot's documents revision."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from knowledge.docs.services_index import documents_touch
from knowledge.matching import calibrate_soon
from knowledge.models import Alternative, Entry, Source
from knowledge.services import bot_kb_touch


def _changed(bot_id: int) -> None:
    bot_kb_touch(bot_id=bot_id)
    if settings.KB_AUTO_CALIBRATE:
        transaction.on_commit(lambda: calibrate_soon(bot_id))


@receiver([post_save, post_delete], sender=Entry)
def entry_changed(sender: type[Entry], instance: Entry, **kwargs: Any) -> None:
    _changed(instance.bot_id)


@receiver([post_save, post_delete], sender=Alternative)
def alternative_changed(sender: type[Alternative], instance: Alternative, **kwargs: Any) -> None:
    bot_id = Entry.objects.filter(pk=instance.entry_id).values_list("bot_id", flat=True).first()
    if bot_id is not None:
        _changed(bot_id)


@receiver(post_delete, sender=Source)
def source_deleted(sender: type[Source], instance: Source, **kwargs: Any) -> None:
    # Its passages went with it (a removed source, a page gone from its sitemap, the admin).
    documents_touch(instance.bot_id)
