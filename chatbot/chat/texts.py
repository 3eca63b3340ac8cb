"""What the server says to visitors about people from the team, in English or Chinese.

The language is the visitor's ``lang`` (``zh…``: Chinese, anything else: English). Notices
stored in the transcript (role system) are always English: ``notice``."""

from __future__ import annotations

_TEXTS: dict[str, dict[str, str]] = {
    "waiting": {
        "en": "You're number {position} in line. Someone from our team will be with you shortly.",
        "zh": "您排在第 {position} 位，客服人员马上就来。",
    },
    "unavailable": {
        "en": (
            "No one from our team is available to chat right now. Leave your email address "
            "and we will get back to you."
        ),
        "zh": "目前没有客服人员在线。请留下您的邮箱，我们会尽快联系您。",
    },
    "timed_out": {
        "en": (
            "Sorry, everyone on our team is busy right now. Leave your email address and we "
            "will get back to you; the assistant can keep helping meanwhile."
        ),
        "zh": "抱歉，客服人员都在忙。请留下您的邮箱，我们会尽快联系您；智能助手可以继续为您解答。",
    },
    "joined": {
        "en": "{agent} joined the conversation.",
        "zh": "{agent} 已加入对话。",
    },
    "left.bot": {
        "en": "{agent} handed the conversation back to the assistant.",
        "zh": "{agent} 已将对话交还给智能助手。",
    },
    "left.closed": {
        "en": "{agent} closed the conversation.",
        "zh": "{agent} 已结束对话。",
    },
}


def text(key: str, lang: str, **values: object) -> str:
    texts = _TEXTS[key]
    return texts.get(lang.lower()[:2], texts["en"]).format(**values)


def notice(key: str, **values: object) -> str:
    """The English text stored as a system message (the transcript's record)."""
    return text(key, "en", **values)
