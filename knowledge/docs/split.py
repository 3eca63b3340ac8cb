"""A document's sections into passages of at most ``max_tokens``: whole paragraphs where
they fit, else sentences (English ``. ! ?`` before a space, Chinese ``。！？`` anywhere, line
ends), else words or CJK characters. Consecutive passages of one section repeat about
``overlap`` tokens (whole sentences when they fit); no passage spans two sections."""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.docs.extract import Document

# CJK radicals, punctuation, kana, bopomofo, ideographs, Hangul, compatibility, full-width forms.
_CJK_CLASS = (
    "\u2e80-\u2fdf\u3000-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
)
# A grain is one CJK character or one other word, with the spaces after it; grains
# concatenated give the text back, so any cut between grains keeps the text as written.
_GRAIN = re.compile(rf"[{_CJK_CLASS}]\s*|[^\s{_CJK_CLASS}]+\s*")
_PARAGRAPHS = re.compile(r"\n\s*\n")
# After . ! ? (and closing quotes or brackets) then spaces not followed by a lowercase
# letter ("e.g. this" stays whole); after 。！？ (and closing marks) anywhere; at line ends.
# The named group is the space between two sentences.
_SENTENCE_END = re.compile(
    r"(?P<line>[ \t]*\n\s*)"
    r"|(?<=[.!?])[\"'”’)\]]*(?P<latin>[ \t]+)(?=[^a-z\s])"
    r"|(?<=[。！？])[”’」』）]*(?P<cjk>[ \t]*)"
)
_CJK_START = re.compile(f"[{_CJK_CLASS}]")
# Long words (URLs, codes, base64) cost a real tokenizer about one token per 4 characters.
_LONG_WORD = 16
_UNIT = 10  # costs are counted in tenths of a token


@dataclass(frozen=True)
class Chunk:
    headings: tuple[str, ...]
    text: str
    tokens: int


def count_tokens(text: str) -> int:
    """Each CJK character one token, other words about 1.3 (words over 16 characters one
    per 4 characters), rounded up."""
    return -(-_cost(text) // _UNIT)


def split(document: Document, *, max_tokens: int = 300, overlap: int = 40) -> list[Chunk]:
    if max_tokens < 2 or not 0 <= overlap < max_tokens // 2:
        raise ValueError("need max_tokens >= 2 and 0 <= overlap < max_tokens / 2")
    chunks: list[Chunk] = []
    for section in document.sections:
        texts = _section_texts(section.text, limit=max_tokens * _UNIT, overlap=overlap * _UNIT)
        for text in texts:
            chunks.append(Chunk(headings=section.headings, text=text, tokens=count_tokens(text)))
    return chunks


@dataclass(frozen=True)
class _Piece:
    """A sentence (or a part of a too-long one), the separator written before it, and
    its cost in tenths of a token."""

    separator: str
    text: str
    cost: int


def _section_texts(text: str, *, limit: int, overlap: int) -> list[str]:
    texts: list[str] = []
    current: list[_Piece] = []
    used = 0
    for paragraph in _paragraphs(text, limit=limit - overlap):
        # Start a new passage at the paragraph when it won't fit whole and this one is half full.
        whole = sum(piece.cost for piece in paragraph)
        if current and used + whole > limit and used >= limit / 2:
            texts.append(_join(current))
            current = _tail(current, overlap)
            used = sum(piece.cost for piece in current)
        for piece in paragraph:
            if current and used + piece.cost > limit:
                texts.append(_join(current))
                current = _tail(current, min(overlap, limit - piece.cost))
                used = sum(p.cost for p in current)
            current.append(piece)
            used += piece.cost
    if current:
        texts.append(_join(current))
    return texts


def _paragraphs(text: str, *, limit: int) -> list[list[_Piece]]:
    """Each paragraph as pieces costing at most ``limit``: itself, or its sentences, or the
    words of a sentence that is still too long."""
    paragraphs = []
    for paragraph in _PARAGRAPHS.split(text.strip()):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        cost = _cost(paragraph)
        if cost <= limit:
            pieces = [_Piece("", paragraph, cost)]
        else:
            pieces = [p for sentence in _sentences(paragraph) for p in _fit(sentence, limit)]
        paragraphs.append([_Piece("\n\n", pieces[0].text, pieces[0].cost), *pieces[1:]])
    return paragraphs


def _sentences(paragraph: str) -> list[_Piece]:
    pieces = []
    separator = ""
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        space = match.lastgroup or "line"
        end = match.start(space)
        if paragraph[start:end].strip():
            pieces.append(_Piece(separator, paragraph[start:end], _cost(paragraph[start:end])))
            separator = match.group(space)
            start = match.end()
    if paragraph[start:].strip():
        pieces.append(_Piece(separator, paragraph[start:], _cost(paragraph[start:])))
    return pieces


def _fit(sentence: _Piece, limit: int) -> list[_Piece]:
    if sentence.cost <= limit:
        return [sentence]
    pieces: list[_Piece] = []
    grains: list[str] = []
    used = 0
    separator = sentence.separator
    for grain in _grains(sentence.text, limit):
        cost = _cost(grain)
        if grains and used + cost > limit:
            text = "".join(grains)
            pieces.append(_Piece(separator, text.rstrip(), used))
            separator = text[len(text.rstrip()) :] or _cut_separator(grain)
            grains, used = [], 0
        grains.append(grain)
        used += cost
    pieces.append(_Piece(separator, "".join(grains).rstrip(), used))
    return pieces


def _grains(text: str, limit: int) -> list[str]:
    grains = []
    # A single "word" over the limit (a data blob) is cut into parts that fit.
    step = max(1, limit * 2 // 5)  # 2.5 tenths of a token per character
    for grain in _GRAIN.findall(text):
        grains.extend(grain[i : i + step] for i in range(0, len(grain), step))
    return grains


def _tail(pieces: list[_Piece], budget: int) -> list[_Piece]:
    """The end of a passage to repeat at the start of the next: whole trailing sentences
    within ``budget`` tokens, else the last words of the last sentence."""
    if budget <= 0 or not pieces:
        return []
    kept: list[_Piece] = []
    used = 0
    for piece in reversed(pieces):
        if used + piece.cost > budget:
            break
        kept.insert(0, piece)
        used += piece.cost
    if kept:
        return kept
    words: list[str] = []
    for grain in reversed(_grains(pieces[-1].text, budget)):
        if used + _cost(grain) > budget:
            break
        words.insert(0, grain)
        used += _cost(grain)
    text = "".join(words).strip()
    return [_Piece("", text, _cost(text))] if text else []


def _join(pieces: list[_Piece]) -> str:
    return "".join(piece.separator + piece.text for piece in pieces).strip()


def _cut_separator(following: str) -> str:
    # Between two CJK characters nothing; inside a cut data blob a space, which keeps the
    # two parts two words (joined they would cost more than apart).
    return "" if _CJK_START.match(following) else " "


def _cost(text: str) -> int:
    """Tokens in tenths, so that sums are exact: 10 per CJK character, 13 per word, 2.5
    per character of a long word."""
    cost = 0
    for grain in _GRAIN.findall(text):
        word = grain.rstrip()
        if _CJK_START.match(word):
            cost += 10
        else:
            cost += 13 if len(word) <= _LONG_WORD else -(-len(word) * 5 // 2)
    return cost
