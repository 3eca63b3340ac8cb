"""Visitor tokens: the opaque string the widget keeps to come back as the same visitor.

A token is the visitor's uid and the bot's id, signed with the bot's own secret
(``django.core.signing``), so a token can't be forged, altered, or replayed against another
bot. It never expires: the widget keeps it as long as the browser does.
"""

from __future__ import annotations

import uuid

from django.core import signing

from chatbot.models import Bot

SALT = "chatbot.visitor"
MAX_TOKEN_LENGTH = 500


def visitor_token_sign(*, bot: Bot, uid: uuid.UUID) -> str:
    return signing.dumps({"b": bot.pk, "v": str(uid)}, key=bot.secret, salt=SALT)


def visitor_token_read(*, bot: Bot, token: object) -> uuid.UUID | None:
    """The visitor uid in ``token``, or None when it is missing, malformed, tampered with or
    was issued by another bot."""
    # A token this module signs is ASCII (base64 and colons); anything else, a lone
    # surrogate included (UnicodeEncodeError in signing), is not one.
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    try:
        payload = signing.loads(token, key=bot.secret, salt=SALT)
    except (signing.BadSignature, ValueError):  # ValueError: garbage that still reached decoding
        return None
    if not isinstance(payload, dict) or payload.get("b") != bot.pk:
        return None
    try:
        return uuid.UUID(str(payload.get("v")))
    except ValueError:
        return None
