"""Admin pages for a bot's documents: upload files, add a URL, a sitemap or a crawl, sync,
see each source's status and last error, and preview a source's passages.

Views only parse the form, call a service and enqueue the work (``knowledge.docs.jobs``):
indexing runs on the background thread, so a request returns at once.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from chatbot.models import Bot
from knowledge.docs import jobs
from knowledge.docs.errors import DocumentError
from knowledge.docs.services import source_add_file, source_add_url
from knowledge.models import Source

PREVIEW_PASSAGES = 200  # a source's page shows this many passages at most


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class FilesField(forms.FileField):
    """One or more files, each checked against DOCS_MAX_FILE_BYTES before it is read."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(**kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        files = data if isinstance(data, list | tuple) else [data]
        cleaned = [super(FilesField, self).clean(item, initial) for item in files]
        limit = settings.DOCS_MAX_FILE_BYTES
        large = [f"{item.name} ({size_text(item.size)})" for item in cleaned if item.size > limit]
        if large:
            raise forms.ValidationError(
                f"Too large: {', '.join(large)}. Files may be up to {size_text(limit)} each."
            )
        return cleaned


class UploadForm(forms.Form):
    files = FilesField(help_text="HTML, Markdown, plain text, PDF or DOCX; several at once if you like.")


class UrlForm(forms.Form):
    url = forms.URLField(max_length=2000, assume_scheme="https", label="URL")
    kind = forms.ChoiceField(
        choices=[
            (Source.Kind.URL, "One web page"),
            (Source.Kind.SITEMAP, "A sitemap (every page it lists)"),
            (Source.Kind.CRAWL, "A crawl of the site from this page"),
        ],
        initial=Source.Kind.URL,
    )
    max_pages = forms.IntegerField(required=False, min_value=1, help_text="Sitemap or crawl: pages at most.")
    max_depth = forms.IntegerField(
        required=False, min_value=0, help_text="Crawl: links followed from the start."
    )


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = [
        "source_link",
        "bot",
        "kind",
        "status",
        "passage_count",
        "size_display",
        "indexed_at",
        "error",
    ]
    list_filter = ["bot", "kind", "status"]
    search_fields = ["title", "url", "filename"]
    actions = ["reindex"]
    change_list_template = "admin/knowledge/docs/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Source]:
        rows = super().get_queryset(request).select_related("bot")
        return rows.annotate(passages_count=Count("passages")).defer("content")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # sources are added on a bot's documents page

    @admin.display(description="source", ordering="title")
    def source_link(self, obj: Source) -> str:
        return format_html('<a href="{}">{}</a>', self._url("passages", obj.pk), obj.label or f"#{obj.pk}")

    @admin.display(description="passages", ordering="passages_count")
    def passage_count(self, obj: Source) -> int:
        return int(getattr(obj, "passages_count", 0))

    @admin.display(description="size", ordering="size")
    def size_display(self, obj: Source) -> str:
        return size_text(obj.size)

    @admin.display(description="last error")
    def error(self, obj: Source) -> str:
        return obj.last_error[:120]

    @admin.action(description="Index the selected sources again")
    def reindex(self, request: HttpRequest, queryset: QuerySet[Source]) -> None:
        if not self._may_add(request):
            raise PermissionDenied
        ids = list(queryset.values_list("pk", flat=True))
        queryset.update(status=Source.Status.QUEUED)
        for source_id in ids:
            jobs.enqueue(source_id)
        self.message_user(request, f"{len(ids)} sources queued for indexing.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        view = self.admin_site.admin_view
        return [
            path("bot/<int:bot_id>/", view(self.bot_view), name=f"{name}_bot"),
            path("<int:source_id>/passages/", view(self.passages_view), name=f"{name}_passages"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        bots = [(bot, self._url("bot", bot.pk)) for bot in Bot.objects.order_by("name")]
        return super().changelist_view(request, {"document_bots": bots, **(extra_context or {})})

    def change_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        # A source is not edited by hand: its page is the preview of its passages.
        return HttpResponseRedirect(self._url("passages", object_id))

    def bot_view(self, request: HttpRequest, bot_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        bot = get_object_or_404(Bot, pk=bot_id)
        upload, link = UploadForm(), UrlForm()
        if request.method == "POST":
            if not self._may_add(request):
                raise PermissionDenied
            action = request.POST.get("action")
            if action == "upload":
                upload = UploadForm(request.POST, request.FILES)
                if upload.is_valid() and self._upload(request, bot, upload):
                    return HttpResponseRedirect(request.path)
            elif action == "url":
                link = UrlForm(request.POST)
                if link.is_valid() and self._add_url(request, bot, link):
                    return HttpResponseRedirect(request.path)
            elif action == "sync":
                jobs.enqueue_sync(bot.pk)
                self.message_user(request, "Sync started: the pages are fetched again in the background.")
                return HttpResponseRedirect(request.path)
            else:
                return HttpResponse("Unknown action.", status=400)
        sources = (
            Source.objects.filter(bot=bot, parent__isnull=True)
            .annotate(
                passages_count=Count("passages", distinct=True), pages_count=Count("pages", distinct=True)
            )
            .defer("content")
            .order_by("-created_at")
        )
        context = {
            "bot": bot,
            "upload": upload,
            "link": link,
            "rows": [
                (source, self._url("passages", source.pk), size_text(source.size)) for source in sources
            ],
            "may_add": self._may_add(request),
            "max_file": size_text(settings.DOCS_MAX_FILE_BYTES),
        }
        status = 400 if upload.errors or link.errors else 200
        return self._render(request, "bot", f"Documents of {bot.name}", context, status=status)

    def passages_view(self, request: HttpRequest, source_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        source = get_object_or_404(
            Source.objects.select_related("bot", "parent").defer("content"), pk=source_id
        )
        pages = source.pages.annotate(passages_count=Count("passages")).defer("content").order_by("url")
        context = {
            "source": source,
            "bot_url": self._url("bot", source.bot_id),
            "parent_url": self._url("passages", source.parent_id) if source.parent_id else "",
            "passages": source.passages.order_by("position")[:PREVIEW_PASSAGES],
            "passage_total": source.passages.count(),
            "pages": [(page, self._url("passages", page.pk)) for page in pages],
            "size": size_text(source.size),
        }
        return self._render(request, "source", str(source), context)

    def _upload(self, request: HttpRequest, bot: Bot, form: UploadForm) -> bool:
        added, failed = [], []
        for upload in form.cleaned_data["files"]:
            try:
                data = upload.read()
                source = source_add_file(
                    bot=bot, filename=upload.name or "", data=data, content_type=upload.content_type or ""
                )
            except DocumentError as err:
                failed.append(str(err))
                continue
            jobs.enqueue(source.pk)
            added.append(source.filename)
        if added:
            self.message_user(request, f"Queued for indexing: {', '.join(added)}.", messages.SUCCESS)
        for reason in failed:
            form.add_error("files", reason)
        return not failed

    def _add_url(self, request: HttpRequest, bot: Bot, form: UrlForm) -> bool:
        data = form.cleaned_data
        try:
            source = source_add_url(
                bot=bot,
                url=data["url"],
                kind=data["kind"],
                max_pages=data["max_pages"],
                max_depth=data["max_depth"],
            )
        except DocumentError as err:
            form.add_error("url", str(err))
            return False
        jobs.enqueue(source.pk)
        self.message_user(request, f"Queued for indexing: {source.url}.", messages.SUCCESS)
        return True

    def _may_add(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.add_{self.opts.model_name}")

    def _url(self, view: str, *args: Any) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_{view}", args=args)

    def _render(
        self, request: HttpRequest, view: str, title: str, extra: dict[str, Any], *, status: int = 200
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "has_view_permission": True,
            **extra,
        }
        return TemplateResponse(request, f"admin/knowledge/docs/{view}.html", context, status=status)
