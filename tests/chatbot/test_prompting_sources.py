"""The company's documents in the prompt: numbered sources, the instruction that goes with
them, the budget they may take, and which of them a reply cites."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from chatbot.prompting import (
    SOURCES_END,
    SOURCES_LOOSE,
    SOURCES_SHARE,
    SOURCES_START,
    SOURCES_STRICT,
    build_prompt,
    cited,
    sources_budget,
)
from chatbot.reply_events import SourceLink
from chatbot.replying import reply_sources
from knowledge.docs.retrieval import PassageHit


def bot() -> Any:
    return SimpleNamespace(
        system_prompt="You help shoppers of Maple Nook.",
        llm_provider="",
        llm_model="",
        temperature=0.3,
        top_p=1.0,
        max_tokens=512,
    )


def passage(n: int, title: str, url: str = "", headings: tuple[str, ...] = (), text: str = "") -> PassageHit:
    return PassageHit(n, 1, title, url, headings, text or f"Text of {title}.", 0.6, 0.8)


CARE = passage(
    11,
    "Care guide",
    "https://shop.example/help/care",
    ("Wooden furniture", "Cleaning"),
    "Wipe with a damp cloth.",
)
WARRANTY = passage(12, "Warranty terms", "https://shop.example/help/warranty", (), "Two years on frames.")
MANUAL = passage(13, "", "", ("Assembly",), "Tighten the bolts after a week.")


def system_of(**kwargs: Any) -> str:
    prompt = build_prompt(bot=bot(), question="How do I clean the table?", budget=3000, **kwargs)
    first = prompt.request.messages[0]
    assert first.role == "system"
    return first.content


def test_it_numbers_the_passages_with_title_heading_path_url_and_text() -> None:
    system = system_of(passages=[CARE, WARRANTY, MANUAL])
    block = system[system.index(SOURCES_START) : system.index(SOURCES_END)]
    assert block == (
        f"{SOURCES_START}\n"
        "[1] Care guide\n"
        "Section: Wooden furniture > Cleaning\n"
        "URL: https://shop.example/help/care\n"
        "Wipe with a damp cloth.\n\n"
        "[2] Warranty terms\n"
        "URL: https://shop.example/help/warranty\n"
        "Two years on frames.\n\n"
        "[3] Untitled\n"
        "Section: Assembly\n"
        "Tighten the bolts after a week.\n"
    )
    assert system.startswith("You help shoppers of Maple Nook.\n\n")


def test_a_bot_answering_only_from_its_knowledge_is_told_so_and_to_cite() -> None:
    strict = system_of(passages=[CARE])
    assert SOURCES_STRICT in strict and SOURCES_LOOSE not in strict
    assert "Answer only from the numbered sources" in SOURCES_STRICT and "[1]" in SOURCES_STRICT
    loose = system_of(passages=[CARE], strict=False)
    assert SOURCES_LOOSE in loose and SOURCES_STRICT not in loose
    assert "[1]" in SOURCES_LOOSE


def test_with_passages_the_entries_are_not_numbered_so_a_citation_means_a_passage() -> None:
    entry = {"question": "Do you ship abroad?", "answer": "To the EU and the UK.", "score": 0.6}
    with_passages = system_of(passages=[CARE], references=[entry])
    assert "- Question: Do you ship abroad?\nAnswer: To the EU and the UK." in with_passages
    assert "[1] Question:" not in with_passages
    without = system_of(references=[entry])
    assert "[1] Question: Do you ship abroad?" in without
    assert SOURCES_START not in without


def test_without_passages_the_prompt_is_as_before() -> None:
    assert system_of() == "You help shoppers of Maple Nook."


def test_the_sources_count_against_the_history_budget() -> None:
    history = [("visitor", "word " * 40), ("bot", "word " * 40)] * 3
    plain = build_prompt(bot=bot(), question="q", history=history, budget=400)
    grounded = build_prompt(
        bot=bot(),
        question="q",
        history=history,
        budget=400,
        passages=[passage(1, "Long", text="word " * 200)],
    )
    assert grounded.history_kept < plain.history_kept


def test_the_documents_budget_is_a_share_of_the_context_budget(settings: Any) -> None:
    settings.LLM_CONTEXT_TOKENS = 3000
    assert sources_budget() == int(3000 * SOURCES_SHARE) == 1200


@pytest.mark.parametrize(
    ("text", "count", "numbers"),
    [
        ("Wipe it with a damp cloth [1].", 3, [1]),
        ("See [2][1] and [2] again.", 3, [1, 2]),
        ("Both apply [1, 3].", 3, [1, 3]),
        ("Both apply [ 1 ,3 ].", 3, [1, 3]),
        ("两年保修【2】。", 3, [2]),
        ("两年保修[1，2]。", 3, [1, 2]),
        ("Out of range [4] and [0].", 3, []),
        ("No citation at all.", 3, []),
        ("An array a[1] in code, with no sources given.", 0, []),
        ("A link [label](https://x.example) and [12].", 12, [12]),
        ("Not a citation: [1a] [-1] [1.5]", 3, []),
    ],
)
def test_it_reads_which_sources_a_reply_cites(text: str, count: int, numbers: list[int]) -> None:
    assert cited(text, count) == numbers


def test_a_reply_keeps_the_sources_it_cites_else_all_it_was_given_in_their_order() -> None:
    given = [SourceLink("Care guide", "https://a.example", 11), SourceLink("Warranty", "", 12)]
    assert reply_sources("Two years [2].", given) == [given[1]]
    assert reply_sources("Two years [2], and clean it [1].", given) == given
    assert reply_sources("Two years.", given) == given
    assert reply_sources("Two years [7].", given) == given
    assert reply_sources("Two years [1].", []) == []
