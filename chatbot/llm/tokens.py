"""Token estimates, for budgets and for providers that don't report usage.

Tokenisers differ per model, so this is an estimate on purpose: a CJK character (and
kana, hangul, full-width punctuation) is about one token; other text about four
characters per token; each message costs a few tokens of framing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from chatbot.llm.types import ChatMessage

_CJK = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
)
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    cjk = len(_CJK.findall(text))
    rest = len(text) - cjk
    return cjk + (rest + 3) // 4


def estimate_message_tokens(messages: Iterable[ChatMessage]) -> int:
    return sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD for m in messages)
