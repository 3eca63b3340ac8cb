"""Does a visitor's message ask for a person instead of the bot?

Clear requests count anywhere in a message ("Can I talk to a human about my refund?",
"转人工"); single words that also name other things ("agent", "human", "person") count
only as the whole message ("Agent please", "human!"), so "Is your shipping agent in
Spain?" is a question for the bot.
"""

from __future__ import annotations

import re

_TARGET = (
    r"(?:a|an|the|some|your)?\s*(?:real\s+|live\s+|human\s+)?"
    r"(?:person|people|human|agent|someone|somebody|representative|operator|staff|"
    r"customer\s+(?:service|support))"
)
_ANYWHERE = re.compile(
    r"\b(?:"
    r"real\s+(?:person|human|people)"
    r"|live\s+(?:agent|person|support|operator)"
    r"|human\s+(?:agent|operator|representative)"
    r"|customer\s+(?:service|support|care)\s+(?:representative|agent|rep)"
    rf"|(?:talk|speak|chat)\s+(?:to|with)\s+{_TARGET}"
    rf"|(?:connect|transfer|put)\s+me\s+(?:to|through\s+to|with)\s+{_TARGET}"
    r"|(?:want|need|like)\s+(?:a|an)\s+(?:real\s+)?(?:human|person|agent)"
    r")\b"
)
_WHOLE = re.compile(
    r"^(?:please\s+)?(?:(?:i\s+)?(?:want|need)\s+)?(?:a|an|the)?\s*(?:real\s+|live\s+)?"
    r"(?:human|humans|agent|person|operator|representative|rep)(?:\s+please)?$"
)
# "人工智能" is artificial intelligence, "真人秀" a reality show: not requests.
_CHINESE = re.compile(r"人工(?!智能)|真人(?!秀|版)")
# A plain yes to the fallback reply's "Would you like to talk to a person?".
_YES = re.compile(
    r"^(?:(?:yes|yeah|yep|yup|sure|ok|okay|please|y)(?:\s+(?:please|thanks|thank you|sure))?"
    r"|好|好的|好啊|好吧|是|是的|要|需要|可以|嗯|嗯嗯|行)$"
)
_PUNCTUATION = re.compile(r"[^\w\s']+")
_SPACES = re.compile(r"\s+")


def asks_for_person(text: str) -> bool:
    if _CHINESE.search(text):
        return True
    plain = text.lower().replace("\u2019", "'")
    if _ANYWHERE.search(_SPACES.sub(" ", plain)):
        return True
    words = _SPACES.sub(" ", _PUNCTUATION.sub(" ", plain)).strip()
    return bool(_WHOLE.match(words))


def accepts_offer(text: str) -> bool:
    """A short yes, as the answer to an offer of a person (only meaningful right after one)."""
    plain = text.lower().replace("\u2019", "'")
    return bool(_YES.match(_SPACES.sub(" ", _PUNCTUATION.sub(" ", plain)).strip()))
