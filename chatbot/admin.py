from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from chatbot.admin_calibration import PINNED_BY_EDIT, BotAdminForm, calibration_panel, calibration_run
from chatbot.admin_try import try_question_context
from chatbot.models import Bot, Conversation, Feedback, Message, Visitor
from knowledge.models import Passage, Source


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    form = BotAdminForm
    list_display = [
        "name",
        "public_key",
        "is_active",
        "threshold_source",
        "answer_threshold",
        "reference_threshold",
        "created_at",
    ]
    list_filter = ["is_active"]
    search_fields = ["name", "public_key"]
    readonly_fields = ["public_key", "created_at", "documents"]
    # The signing secret never appears in a page.
    exclude = ["secret"]
    fieldsets = [
        (None, {"fields": ["name", "is_active", "public_key", "allowed_origins", "created_at"]}),
        ("Conversation", {"fields": ["greeting", "system_prompt", "fallback_reply"]}),
        (
            "Knowledge base",
            {
                "fields": [
                    "threshold_source",
                    "target_precision",
                    "answer_threshold",
                    "reference_threshold",
                    "answer_only_from_knowledge",
                    "documents",
                ]
            },
        ),
        ("Language model", {"fields": ["llm_provider", "llm_model", "temperature", "top_p", "max_tokens"]}),
    ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        bot = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), **try_question_context(request, bot)}
        if bot is not None:
            extra_context["calibration"] = calibration_panel(bot)
            extra_context["can_recalibrate"] = self.has_change_permission(request, bot)
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="Documents")
    def documents(self, bot: Bot) -> str:
        """The bot's help-center pages and files, and a link to add, sync and preview them."""
        if bot.pk is None:
            return "Save the bot first, then add its documents."
        sources = Source.objects.filter(bot=bot).exclude(kind=Source.Kind.PAGE).count()
        passages = Passage.objects.filter(bot=bot).count()
        url = reverse("admin:knowledge_source_bot", args=[bot.pk])
        link = '{} sources, {} passages: <a href="{}">manage documents</a>'
        return format_html(link, sources, passages, url)

    def save_model(self, request: HttpRequest, obj: Bot, form: ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if getattr(form, "pinned_by_edit", False):
            messages.info(request, PINNED_BY_EDIT)
        if change and "target_precision" in form.changed_data:
            # After the commit, so the calibration reads the new target (a background one too).
            transaction.on_commit(lambda: calibration_run(request, obj))

    def get_urls(self) -> list[URLPattern]:
        recalibrate = path(
            "<path:object_id>/recalibrate/",
            self.admin_site.admin_view(self.recalibrate_view),
            name="chatbot_bot_recalibrate",
        )
        return [recalibrate, *super().get_urls()]

    @method_decorator(require_POST)
    def recalibrate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        bot = self.get_object(request, unquote(object_id))
        if bot is None:
            raise Http404
        if not self.has_change_permission(request, bot):
            raise PermissionDenied
        calibration_run(request, bot)
        return HttpResponseRedirect(reverse("admin:chatbot_bot_change", args=[bot.pk]))


@admin.register(Visitor)
class VisitorAdmin(admin.ModelAdmin):
    list_display = ["__str__", "bot", "language", "first_seen", "last_seen"]
    list_filter = ["bot", "language"]
    search_fields = ["uid", "name", "email"]
    readonly_fields = ["uid", "first_seen", "last_seen"]


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ["created_at", "role", "source", "status", "text", "matched_entry", "score", "ttft_ms"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "bot", "visitor", "status", "needs_followup", "assigned_agent", "last_activity_at"]
    list_filter = ["status", "needs_followup", "bot"]
    list_select_related = ["bot", "visitor", "assigned_agent"]
    raw_id_fields = ["visitor", "assigned_agent"]
    date_hierarchy = "last_activity_at"
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "source", "status", "short_text", "score", "created_at"]
    list_filter = ["role", "source", "status"]
    search_fields = ["text"]
    raw_id_fields = ["conversation", "matched_entry"]
    list_select_related = ["conversation"]

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return super().get_queryset(request).defer("conversation__summary")


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["message", "rating", "comment", "created_at"]
    list_filter = ["rating"]
    raw_id_fields = ["message"]
