"""Splitting sections into passages: the token limit holds for English and Chinese,
consecutive passages of a section overlap, headings travel with every passage, and no
passage mixes two sections or loses text."""

from __future__ import annotations

import itertools
import re

import pytest

from knowledge.docs.extract import Document, Section
from knowledge.docs.split import Chunk, count_tokens, split

ENGLISH = " ".join(
    f"Rule {n} says that an unused lamp can be returned within thirty days for a full refund."
    for n in range(40)
)
CHINESE = "".join(f"第{n}条：收到商品后七天内可以无理由退货，请保持商品和包装完好。" for n in range(60))


def _overlap(previous: str, following: str) -> str:
    """The longest end of ``previous`` that ``following`` starts with."""
    for start in range(len(previous)):
        if following.startswith(previous[start:]):
            return previous[start:]
    return ""


def _sentences(text: str) -> set[str]:
    return {s for s in re.split(r"(?<=[.。])\s*", text) if s}


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("hello", 2),  # 1.3, rounded up
        ("hello world", 3),
        ("one two three four five six seven eight nine ten", 13),
        ("退货政策", 4),
        ("退货 policy", 4),  # 2 + 1.3
        ("七天。OK？", 6),  # CJK punctuation counts as a character
        ("https://shop.example/" + "a" * 79, 25),  # a 100-character word: one per 4 characters
    ],
)
def test_it_counts_tokens(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


@pytest.mark.parametrize("text", [ENGLISH, CHINESE])
def test_long_sections_are_split_within_the_limit_with_overlap(text: str) -> None:
    chunks = split(
        Document(title="Policy", sections=[Section(("Returns",), text)]), max_tokens=120, overlap=30
    )

    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.headings == ("Returns",)
        assert chunk.tokens == count_tokens(chunk.text) <= 120
        assert chunk.text in text
    for previous, following in itertools.pairwise(chunks):
        repeated = _overlap(previous.text, following.text)
        assert 0 < count_tokens(repeated) <= 30
    # Nothing is lost: every sentence is in some passage.
    assert _sentences(text) <= set().union(*(_sentences(chunk.text) for chunk in chunks))


def test_the_overlap_is_whole_sentences_when_they_fit() -> None:
    chunks = split(Document(title="", sections=[Section((), ENGLISH)]), max_tokens=120, overlap=30)

    repeated = _overlap(chunks[0].text, chunks[1].text)
    assert re.fullmatch(r"Rule \d+ says that .* full refund\.", repeated)


def test_no_passage_mixes_two_sections_and_each_keeps_its_heading_path() -> None:
    sections = [
        Section((), "Intro. " * 3),
        Section(("Returns",), ENGLISH),
        Section(("Returns", "退货"), CHINESE),
        Section(("Shipping",), "Free above 50 euros."),
    ]

    chunks = split(Document(title="Help", sections=sections), max_tokens=100, overlap=20)

    for chunk in chunks:
        section = next(s for s in sections if s.headings == chunk.headings)
        assert chunk.text in section.text
    assert [c.headings for c in chunks if c.headings[:1] != ("Returns",)] == [(), ("Shipping",)]
    assert chunks[-1] == Chunk(headings=("Shipping",), text="Free above 50 euros.", tokens=6)


def test_short_paragraphs_share_a_passage_and_breaks_prefer_paragraph_ends() -> None:
    paragraphs = [f"Paragraph {n} has a few words about lamp care and cleaning." for n in range(12)]
    text = "\n\n".join(paragraphs)

    chunks = split(Document(title="", sections=[Section((), text)]), max_tokens=60, overlap=0)

    assert 1 < len(chunks) < len(paragraphs)
    for chunk in chunks:
        assert all(part in paragraphs for part in chunk.text.split("\n\n"))
    assert "\n\n".join(c.text for c in chunks) == text


def test_a_sentence_longer_than_the_limit_is_cut_between_words() -> None:
    run_on = " ".join(f"lamp{n}" for n in range(400))  # no sentence end at all
    document = Document(title="", sections=[Section((), run_on)])

    overlapping = split(document, max_tokens=50, overlap=10)
    apart = split(document, max_tokens=50, overlap=0)

    assert all(chunk.tokens <= 50 and chunk.text in run_on for chunk in overlapping + apart)
    assert " ".join(chunk.text for chunk in apart) == run_on
    assert len(overlapping) > len(apart)


def test_a_data_blob_is_cut_to_the_limit_and_cjk_runs_between_characters() -> None:
    blob = "QUJD" * 500  # one 2,000-character "word": 500 tokens
    cjk = "这是一个没有任何标点符号的很长的句子" * 20

    for text in (blob, cjk):
        chunks = split(Document(title="", sections=[Section((), text)]), max_tokens=100, overlap=0)
        assert len(chunks) > 1
        assert all(chunk.tokens <= 100 for chunk in chunks)
        assert "".join(chunk.text for chunk in chunks).replace(" ", "") == text


def test_chinese_sentences_end_at_full_width_marks() -> None:
    text = "请先拔掉电源。然后用干布擦拭！可以用水洗吗？不可以。" * 6

    chunks = split(Document(title="", sections=[Section((), text)]), max_tokens=40, overlap=0)

    assert len(chunks) > 1
    assert all(chunk.text[-1] in "。！？" for chunk in chunks)
    assert "".join(c.text for c in chunks) == text


def test_empty_sections_give_no_passages_and_bad_limits_are_refused() -> None:
    assert split(Document(title="", sections=[Section(("A",), "  \n\n ")])) == []
    with pytest.raises(ValueError):
        split(Document(title="", sections=[]), max_tokens=100, overlap=50)
