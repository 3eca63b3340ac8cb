"""Which visitor messages ask for a person (chatbot.chat.handoff_phrases)."""

from __future__ import annotations

import pytest

from chatbot.chat.handoff_phrases import accepts_offer, asks_for_person


@pytest.mark.parametrize(
    "text",
    [
        "I want to talk to a human",
        "i want to talk to a human!!",
        "Can I speak to someone, please?",
        "Let me talk to an agent about my refund",
        "talk to a person",
        "speak with a real person",
        "Please connect me to a representative",
        "I need a live agent",
        "I’d like to talk to a person",  # typographic apostrophe
        "customer service representative",
        "human",
        "Human!",
        "HUMAN PLEASE",
        "agent",
        "Agent please",
        "a real person",
        "转人工",
        "人工",
        "人工客服",
        "我要找真人",
        "请帮我转人工客服，谢谢",
    ],
)
def test_it_recognises_a_request_for_a_person(text: str) -> None:
    assert asks_for_person(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "Is your shipping agent in Spain?",
        "Do you sell agent software?",
        "What is human resources?",
        "Is the shampoo safe for human hair?",
        "Are your products tested on humans?",
        "Who is the person on the box?",
        "How do I speak French with the course?",
        "Talk to me about refunds",
        "hello",
        "",
        "人工智能能帮我选尺码吗？",
        "你们有真人秀的周边吗",
        "Where is my parcel?",
    ],
)
def test_it_leaves_other_questions_to_the_bot(text: str) -> None:
    assert asks_for_person(text) is False


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("yes", True),
        ("Yes please!", True),
        ("ok", True),
        ("sure, thanks", True),
        ("好的", True),
        ("好的。", True),
        ("嗯", True),
        ("no", False),
        ("yes, my order is late", False),
        ("好的谢谢你们的服务很好", False),
        ("not now", False),
    ],
)
def test_it_takes_only_a_plain_yes_as_accepting_the_offer_of_a_person(text: str, accepted: bool) -> None:
    assert accepts_offer(text) is accepted
