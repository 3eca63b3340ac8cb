from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from knowledge.admin_io import EntryImportExportMixin
from knowledge.models import Alternative, Entry, Tag
from knowledge.services import bot_kb_touch, entries_embed, entries_set_active


class AlternativeInline(admin.TabularInline):
    model = Alternative
    extra = 1
    verbose_name = "alternative phrasing"


@admin.register(Entry)
class EntryAdmin(EntryImportExportMixin, admin.ModelAdmin):
    list_display = ["question", "bot", "tag_list", "is_active", "updated_at"]
    list_filter = ["bot", "is_active", "tags"]
    search_fields = ["question", "answer", "alternatives__text", "external_id"]
    filter_horizontal = ["tags"]
    inlines = [AlternativeInline]
    actions = ["activate", "deactivate", "reembed"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Entry]:
        return super().get_queryset(request).select_related("bot").prefetch_related("tags")

    @admin.display(description="tags")
    def tag_list(self, obj: Entry) -> str:
        return ", ".join(tag.name for tag in obj.tags.all())

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Phrasings are saved by now: embed the new or edited ones right away.
        entries_embed(entries=[form.instance])

    @admin.action(description="Activate selected entries")
    def activate(self, request: HttpRequest, queryset: QuerySet[Entry]) -> None:
        count = entries_set_active(entries=queryset, active=True)
        self.message_user(request, f"{count} entries activated.")

    @admin.action(description="Deactivate selected entries")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Entry]) -> None:
        count = entries_set_active(entries=queryset, active=False)
        self.message_user(request, f"{count} entries deactivated.")

    @admin.action(description="Re-embed selected entries")
    def reembed(self, request: HttpRequest, queryset: QuerySet[Entry]) -> None:
        count = entries_embed(entries=list(queryset), force=True)
        for bot_id in set(queryset.values_list("bot_id", flat=True)):
            bot_kb_touch(bot_id=bot_id)
        self.message_user(request, f"{count} phrasings re-embedded.")


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


import knowledge.docs.admin  # noqa: E402, F401 - registers the documents pages
