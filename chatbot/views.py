from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from chatbot.readiness import readiness_report
from chatbot.selectors import demo_bot

DEMO_WIDGET_COLOR = "#b5562c"  # the shop's accent (static/demo/shop.css)


def widget_tag(public_key: str, **options: str) -> SafeString:
    """The one script tag a site embeds; options become data-* attributes (color, position, lang)."""
    attrs = format_html_join("", ' data-{}="{}"', options.items())
    # The stable URL, never static()'s hashed copy (STATIC_HASHED): companies paste this tag
    # once, and a release reaches them because the URL is revalidated (deploy/ nginx configs).
    src = settings.STATIC_URL + "chatbot/widget.js"
    return format_html('<script src="{}" data-bot="{}"{} async></script>', src, public_key, attrs)


def demo(request: HttpRequest) -> HttpResponse:
    bot = demo_bot()
    return render(
        request,
        "demo/shop.html",
        {
            "bot_name": bot.name if bot else "not loaded",
            "bot": bot,
            "widget_tag": widget_tag(bot.public_key, color=DEMO_WIDGET_COLOR) if bot else "",
        },
    )


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches nothing else (readiness: ``readyz``)."""
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> JsonResponse:
    report = await readiness_report()
    return JsonResponse(report.as_json(), status=200 if report.ready else 503)
