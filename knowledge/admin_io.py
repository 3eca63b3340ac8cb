"""Admin pages to import and export a bot's knowledge base (the work is in knowledge.io)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify

from chatbot.models import Bot
from knowledge.io import ExportFailed, ImportFailed, detect_format, kb_export, kb_import, parse_kb

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json; charset=utf-8"}
# The bot filter of the entry list (list_filter = ["bot"]).
BOT_FILTER_PARAM = "bot__id__exact"


class ImportForm(forms.Form):
    bot = forms.ModelChoiceField(queryset=Bot.objects.all())
    file = forms.FileField(
        help_text="CSV (UTF-8) or JSON. Columns: id, question, answer, alternatives (separated by |), "
        "tags (separated by ,), active. Entries with an id already in the bot are updated."
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
        return upload


class ExportForm(forms.Form):
    bot = forms.ModelChoiceField(queryset=Bot.objects.all())
    format = forms.ChoiceField(choices=[("csv", "CSV"), ("json", "JSON")], initial="csv")


class EntryImportExportMixin(admin.ModelAdmin):
    """Import and Export buttons on the entry list, and the pages behind them."""

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name=f"{name}_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name=f"{name}_export"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        bot_id = request.GET.get(BOT_FILTER_PARAM, "")
        context: dict[str, Any] = {"kb_import_url": "", "kb_export_urls": []}
        if self._may_import(request):
            context["kb_import_url"] = self._url("import", bot=bot_id)
        if self.has_view_permission(request):
            context["kb_export_urls"] = [
                (f"Export {fmt.upper()}", self._url("export", bot=bot_id, format=fmt))
                for fmt in ("csv", "json")
            ]
        return super().changelist_view(request, {**context, **(extra_context or {})})

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self._may_import(request):
            raise PermissionDenied
        if request.method != "POST":
            form = ImportForm(initial={"bot": request.GET.get("bot")})
            return self._render(request, "import", "Import knowledge-base entries", form)
        form = ImportForm(request.POST, request.FILES)
        if not form.is_valid():
            return self._render(request, "import", "Import knowledge-base entries", form, status=400)
        bot, upload = form.cleaned_data["bot"], form.cleaned_data["file"]
        data = upload.read()
        try:
            rows = parse_kb(data, fmt=detect_format(upload.name, data))
            summary = kb_import(bot=bot, rows=rows)
        except ImportFailed as err:
            return self._render(
                request, "import", "Import knowledge-base entries", form, status=400, failure=err
            )
        self.message_user(
            request,
            f"Imported {len(rows)} entries from {upload.name} into {bot}: "
            f"{summary.created} created, {summary.updated} updated.",
            messages.SUCCESS,
        )
        changelist = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        return HttpResponseRedirect(f"{changelist}?{urlencode({BOT_FILTER_PARAM: bot.pk})}")

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if not request.GET.get("bot"):
            form = ExportForm(initial={"format": request.GET.get("format", "csv")})
            return self._render(request, "export", "Export knowledge-base entries", form)
        form = ExportForm(request.GET)
        if not form.is_valid():
            return self._render(request, "export", "Export knowledge-base entries", form, status=400)
        bot, fmt = form.cleaned_data["bot"], form.cleaned_data["format"]
        try:
            data = kb_export(bot=bot, fmt=fmt)
        except ExportFailed as err:
            self.message_user(request, str(err), messages.ERROR)
            return self._render(request, "export", "Export knowledge-base entries", form, status=409)
        filename = f"kb-{slugify(bot.name) or bot.pk}-{timezone.localdate():%Y-%m-%d}.{fmt}"
        return HttpResponse(
            data,
            content_type=CONTENT_TYPES[fmt],
            headers={"Content-Disposition": content_disposition_header(True, filename)},
        )

    def _may_import(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def _url(self, view: str, **params: str) -> str:
        url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_{view}")
        query = urlencode({key: value for key, value in params.items() if value})
        return f"{url}?{query}" if query else url

    def _render(
        self,
        request: HttpRequest,
        view: str,
        title: str,
        form: forms.Form,
        *,
        status: int = 200,
        failure: ImportFailed | None = None,
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "form": form,
            "failure": failure,
            "has_view_permission": self.has_view_permission(request),
        }
        template = f"admin/{self.opts.app_label}/{self.opts.model_name}/{view}.html"
        return TemplateResponse(request, template, context, status=status)
