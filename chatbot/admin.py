from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from chatbot.admin_try import try_question_context
from chatbot.models import Bot, Conversation, Feedback, Message, Visitor


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "public_key",
        "is_active",
        "answer_threshold",
        "reference_threshold",
        "created_at",
    ]
    list_filter = ["is_active"]
    search_fields = ["name", "public_key"]
    readonly_fields = ["public_key", "created_at"]
    # The signing secret never appears in a page.
    exclude = ["secret"]
    fieldsets = [
        (None, {"fields": ["name", "is_active", "public_key", "allowed_origins", "created_at"]}),
        ("Conversation", {"fields": ["greeting", "system_prompt", "fallback_reply"]}),
        ("Knowledge base", {"fields": ["answer_threshold", "reference_threshold"]}),
        ("Language model", {"fields": ["llm_provider", "llm_model", "temperature", "top_p", "max_tokens"]}),
    ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        bot = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), **try_question_context(request, bot)}
        return super().change_view(request, object_id, form_url, extra_context)


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
