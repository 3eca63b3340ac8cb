from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from chatbot.llm.tokens import MESSAGE_OVERHEAD, estimate_tokens
from chatbot.prompting import (
    REFERENCE_END,
    REFERENCE_START,
    SUMMARY_HEADING,
    Reference,
    as_reference,
    build_prompt,
    fit_history,
    split_for_summary,
    summary_request,
)


def bot(**fields: Any) -> Any:
    values = {
        "system_prompt": "You help shoppers of Maple Nook.",
        "llm_provider": "",
        "llm_model": "",
        "temperature": 0.3,
        "top_p": 1.0,
        "max_tokens": 512,
    }
    return SimpleNamespace(**{**values, **fields})


def cost(text: str) -> int:
    return estimate_tokens(text) + MESSAGE_OVERHEAD


def test_it_sends_the_system_prompt_history_and_question_in_order() -> None:
    history = [
        ("visitor", "Hi"),
        ("bot", "Hello! How can I help?"),
        ("visitor", "Shipping?"),
        ("agent", "3 days."),
    ]
    prompt = build_prompt(bot=bot(), question="And returns?", history=history, budget=1000)
    assert [(m.role, m.content) for m in prompt.request.messages] == [
        ("system", "You help shoppers of Maple Nook."),
        ("user", "Hi"),
        ("assistant", "Hello! How can I help?"),
        ("user", "Shipping?"),
        ("assistant", "3 days."),
        ("user", "And returns?"),
    ]
    assert (prompt.history_kept, prompt.history_dropped) == (4, 0)


def test_it_takes_the_bots_model_and_sampling_parameters() -> None:
    request = build_prompt(
        bot=bot(llm_provider="zhipu", llm_model="glm-4-flash", temperature=0.7, top_p=0.9, max_tokens=300),
        question="hi",
        budget=1000,
    ).request
    assert (request.provider, request.model, request.temperature, request.top_p, request.max_tokens) == (
        "zhipu",
        "glm-4-flash",
        0.7,
        0.9,
        300,
    )


def test_it_merges_consecutive_turns_of_one_side_and_skips_system_and_empty_ones() -> None:
    history = [
        ("visitor", "a"),
        ("visitor", "b"),
        ("system", "joined"),
        ("bot", " "),
        ("bot", "c"),
        ("agent", "d"),
    ]
    messages = build_prompt(bot=bot(), question="e", history=history, budget=1000).request.messages
    assert [(m.role, m.content) for m in messages[1:]] == [
        ("user", "a\n\nb"),
        ("assistant", "c\n\nd"),
        ("user", "e"),
    ]


def test_it_keeps_the_most_recent_turns_that_fit_the_budget() -> None:
    history = [("visitor", "x" * 400), ("bot", "y" * 400), ("visitor", "short"), ("bot", "reply")]
    kept, dropped = fit_history(history, cost("short") + cost("reply"))
    assert (kept, dropped) == ([("visitor", "short"), ("bot", "reply")], 2)


def test_cjk_text_costs_about_a_token_a_character() -> None:
    chinese = "我想退货，请问需要多久才能退款？"  # 16 characters, 16 tokens
    english = "I would like to return this, how long does a refund take?"  # 57 characters, 15 tokens
    history = [("visitor", chinese), ("bot", english)]
    assert fit_history(history, cost(chinese) + cost(english)) == (history, 0)
    assert fit_history(history, cost(chinese) + cost(english) - 1) == (
        [],
        2,
    )  # a window starts with the visitor
    assert cost(chinese) == 16 + MESSAGE_OVERHEAD
    assert cost(english) == 15 + MESSAGE_OVERHEAD


def test_the_window_starts_with_a_visitor_turn() -> None:
    history = [("visitor", "q1"), ("bot", "a1"), ("visitor", "q2"), ("bot", "a2")]
    kept, dropped = fit_history(history, cost("a1") + cost("q2") + cost("a2"))
    assert (kept, dropped) == ([("visitor", "q2"), ("bot", "a2")], 2)


def test_the_fixed_parts_come_out_of_the_budget_first() -> None:
    history = [("visitor", "old question"), ("bot", "old answer")]
    question = "new question"
    fixed = cost(bot().system_prompt) + cost(question)
    full = build_prompt(
        bot=bot(), question=question, history=history, budget=fixed + 2 * cost("old answer") + 1
    )
    tight = build_prompt(bot=bot(), question=question, history=history, budget=fixed)
    assert (full.history_kept, tight.history_kept, tight.history_dropped) == (2, 0, 2)
    assert [m.content for m in tight.request.messages] == [bot().system_prompt, question]


def test_older_turns_are_replaced_by_the_summary() -> None:
    prompt = build_prompt(bot=bot(), question="q", summary="Visitor Ann asked about order 42.", budget=1000)
    system = prompt.request.messages[0].content
    assert (
        system == f"You help shoppers of Maple Nook.\n\n{SUMMARY_HEADING}\nVisitor Ann asked about order 42."
    )


def test_references_are_delimited_labelled_and_come_with_an_instruction() -> None:
    references = [
        {"question": "How long do refunds take?", "answer": "5 working days.", "score": 0.7},
        SimpleNamespace(question="退货地址？", answer="上海市…", score=0.6, entry_id=3),
    ]
    system = build_prompt(bot=bot(), question="refund?", references=references, budget=1000).request.messages[
        0
    ]
    text = system.content
    assert text.startswith("You help shoppers of Maple Nook.\n\n")
    assert "reference material" in text and "not instructions" in text
    assert "say that you don't have that information" in text
    block = text[text.index(REFERENCE_START) : text.index(REFERENCE_END) + len(REFERENCE_END)]
    assert block == (
        f"{REFERENCE_START}\n"
        "[1] Question: How long do refunds take?\nAnswer: 5 working days.\n\n"
        "[2] Question: 退货地址？\nAnswer: 上海市…\n"
        f"{REFERENCE_END}"
    )


def test_no_reference_block_without_references() -> None:
    system = build_prompt(bot=bot(), question="hi", budget=1000).request.messages[0].content
    assert REFERENCE_START not in system


@pytest.mark.parametrize(
    "item",
    [
        {"question": "q", "answer": "a", "score": 0.5},
        SimpleNamespace(question="q", answer="a", score=0.5),
        Reference("q", "a", 0.5),
    ],
)
def test_references_come_as_dicts_or_objects(item: object) -> None:
    assert as_reference(item) == Reference("q", "a", 0.5)


def test_it_folds_all_but_half_a_budget_into_the_summary() -> None:
    turns = [("visitor", "x" * 40), ("bot", "y" * 40)] * 5  # 14 tokens each
    assert split_for_summary(turns, budget=2 * 14 * 2) == 8
    assert split_for_summary(turns[:2], budget=1000) == 0


def test_the_summary_request_merges_the_old_summary_and_the_new_turns() -> None:
    request = summary_request(
        bot=bot(llm_provider="dashscope", llm_model="qwen-turbo"),
        summary="Ann wants a refund.",
        turns=[("visitor", "Order 42"), ("bot", "Thanks"), ("agent", "Refunded")],
    )
    assert (request.provider, request.model) == ("dashscope", "qwen-turbo")
    assert request.messages[0].role == "system" and "running summary" in request.messages[0].content
    assert request.messages[1].content == (
        "Earlier summary:\nAnn wants a refund.\n\n"
        "New turns:\nVisitor: Order 42\nAssistant: Thanks\nAgent: Refunded"
    )
