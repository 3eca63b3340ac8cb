"""An entry's answer as the embedding model reads it: Markdown links and emphasis removed.

Answers are written for the chat widget (``**bold**``, ``[the returns page](https://...)``);
the markers and addresses are noise to the model, the words are what a visitor's question
can agree with. Everything else is kept as written.
"""

from __future__ import annotations

import re

# [text](url) or ![alt](url), with an optional "title"; one level of parentheses in the url.
_LINK = re.compile(r"!?\[([^\]\n]*)\]\((?:[^()\s]|\([^()\s]*\))*(?:\s+\"[^\"\n]*\")?\)")
_EMPHASIS = re.compile(r"\*\*|__")


def plain(answer: str) -> str:
    """``answer`` without Markdown emphasis markers (``**``, ``__``), links as their text."""
    return _EMPHASIS.sub("", _LINK.sub(r"\1", answer)).strip()
