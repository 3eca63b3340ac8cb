"""What the reply pipeline (``chatbot.replying``) tells its callers about one visitor message,
one class per situation:

- ``Acked``: the message is stored. With ``duplicate`` it was stored before (the widget sent
  it again): nothing follows.
- ``AgentHasConversation``: an agent has the conversation, so the bot stays silent and the
  message is for the agents. Nothing follows.
- otherwise ``Started`` (the reply's id and source), ``Delta``s, and ``Ended``: the stored
  reply. ``Started`` and at least one ``Delta`` always come before ``Ended``, which names the
  passages of the company's documents the reply drew on (``sources``).

A reply that is abandoned (the caller went away, or something broke) has no ``Ended``: the
pipeline keeps what was streamed, marked partial.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chatbot.llm import ChatResult
from chatbot.models import Message

NO_LLM = "no LLM is configured"  # Ended.error of a fallback sent because there is no LLM at all
SUGGESTED = "no LLM is configured: a knowledge-base entry suggested"  # Ended.error of a suggestion
# Ended.error of the fallback sent because the bot answers only from the company's knowledge
# and neither an entry nor a passage of its documents is relevant (a knowledge gap).
NOT_KNOWN = "nothing in the knowledge base or the documents is relevant"


@dataclass(frozen=True, slots=True)
class SourceLink:
    """A passage of the company's documents a reply drew on, as visitors and agents see it."""

    title: str
    url: str
    passage_id: int

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "url": self.url, "passage_id": self.passage_id}


@dataclass(frozen=True, slots=True)
class Acked:
    message_id: int
    text: str
    created: datetime
    #: Stored before, with the same ``client_id``: nothing is stored or answered again.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class AgentHasConversation:
    """The visitor's message (``message_id``) is for the agent who has the conversation."""

    message_id: int
    text: str
    created: datetime


@dataclass(frozen=True, slots=True)
class Started:
    reply_id: int
    #: knowledge, llm or fallback: lets a client label the reply from its first piece.
    source: str


@dataclass(frozen=True, slots=True)
class Delta:
    reply_id: int
    text: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The stored reply. ``result`` has the LLM's usage and timings when the LLM replied."""

    reply_id: int
    text: str
    source: str
    status: str
    score: float | None = None
    result: ChatResult | None = None
    #: Why the LLM was not used or failed, for logs and the terminal; never for the visitor.
    error: str = ""
    #: The knowledge-base entry answered with, or the LLM's best reference.
    entry_id: int | None = None
    #: The passages the reply cites, else the ones it was given, most relevant first.
    sources: tuple[SourceLink, ...] = ()

    @property
    def person_offered(self) -> bool:
        """The fallback reply offers a person: a plain "yes" next takes the offer."""
        return self.source == Message.Source.FALLBACK


ReplyEvent = Acked | AgentHasConversation | Started | Delta | Ended
