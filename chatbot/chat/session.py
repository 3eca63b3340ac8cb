"""Who a chat connection speaks for, fixed by its first ``hello`` (the visitor resumed by their
token, or a new one, and their current conversation), and the ``welcome`` frame that answers
every hello (docs/chat-protocol.md)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chatbot.chat import frames
from chatbot.handoff import handoff_state_current
from chatbot.models import Bot
from chatbot.selectors import HandoffState, conversation_history
from chatbot.services import conversation_current, visitor_resume_or_create


@dataclass
class Session:
    visitor_uid: uuid.UUID
    token: str
    conversation_id: int
    lang: str


@dataclass
class Welcome:
    session: Session
    frame: dict[str, Any]
    handoff: HandoffState
    expired: bool  # the conversation had waited for a person longer than the limit


def session_welcome(*, bot: Bot, hello: frames.Hello, user_agent: str, session: Session | None) -> Welcome:
    """The session (resumed or new visitor, current conversation) and its ``welcome`` frame.
    A repeated hello keeps the connection's visitor and conversation."""
    if session is None:
        visitor, token = visitor_resume_or_create(
            bot=bot, token=hello.visitor, language=hello.lang, page_url=hello.page, user_agent=user_agent
        )
        conversation = conversation_current(visitor=visitor)
        session = Session(visitor.uid, token, conversation.pk, hello.lang)
    elif hello.lang:
        session.lang = hello.lang
    state, expired = handoff_state_current(conversation_id=session.conversation_id)
    history = conversation_history(
        conversation_id=session.conversation_id, limit=settings.CHAT_HISTORY_MESSAGES, after=hello.after
    )
    frame = {
        "type": "welcome",
        "visitor": session.token,
        "conversation": session.conversation_id,
        "messages": [frames.message_item(m, client_id=True) for m in history],
        "greeting": bot.greeting,
        "name": bot.name,
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "status": state.status,
        "agent": state.agent,
    }
    return Welcome(session, frame, state, expired)
