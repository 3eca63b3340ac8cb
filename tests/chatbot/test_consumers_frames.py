"""Parsing client frames (chatbot.chat.frames): edge cases without a websocket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatbot.chat import frames
from chatbot.chat.frames import Contact, FrameError, Hello, Rate, Say, Typing, encode, frame_parse


def parse(frame: dict[str, Any] | str, max_chars: int = 20) -> Any:
    return frame_parse(frame if isinstance(frame, str) else json.dumps(frame), max_chars=max_chars)


def code_of(frame: dict[str, Any] | str) -> str:
    with pytest.raises(FrameError) as caught:
        parse(frame)
    return caught.value.code


def test_a_message_is_trimmed() -> None:
    assert parse({"type": "message", "text": "  hi \n", "client_id": "a"}) == Say("hi", "a")


def test_the_limit_counts_characters_not_bytes() -> None:
    assert parse({"type": "message", "text": "你" * 20}).text == "你" * 20
    assert code_of({"type": "message", "text": "你" * 21}) == "too_long"


def test_lone_surrogates_and_nul_characters_are_made_storable() -> None:
    say = parse('{"type": "message", "text": "a\\ud800b\\u0000c", "client_id": "x\\udfff"}')
    assert say == Say("a?bc", "x?")
    encode({"text": say.text, "client_id": say.client_id}).encode("utf-8")  # no UnicodeEncodeError


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "hello"}, Hello(None, "", "", None)),
        (
            {"type": "hello", "visitor": "t", "page": "https://a.example/x", "lang": "zh-Hans", "after": 5},
            Hello("t", "https://a.example/x", "zh-Hans", 5),
        ),
        (
            {"type": "hello", "page": "javascript:alert(1)", "lang": "<b>", "after": -1},
            Hello(None, "", "", None),
        ),
        ({"type": "hello", "lang": "en" * 20, "after": True}, Hello(None, "", "", None)),
        ({"type": "hello", "after": "12"}, Hello(None, "", "", None)),
    ],
)
def test_hello_keeps_only_well_formed_details(frame: dict[str, Any], expected: Hello) -> None:
    assert parse(frame) == expected


def test_feedback_comment_is_optional_and_trimmed() -> None:
    assert parse({"type": "feedback", "id": 3, "rating": "down"}) == Rate(3, "down", "")
    assert parse({"type": "feedback", "id": 3, "rating": "up", "comment": " ok "}) == Rate(3, "up", "ok")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("", "bad_json"),
        ("null", "bad_json"),
        ({"type": None}, "unknown_type"),
        ({"type": "Message"}, "unknown_type"),
        ({"type": "message", "text": ["hi"]}, "invalid"),
        ({"type": "message", "text": "hi", "client_id": 5}, "invalid"),
        ({"type": "feedback", "id": 1.5, "rating": "up"}, "invalid"),
    ],
)
def test_error_codes(frame: dict[str, Any] | str, code: str) -> None:
    assert code_of(frame) == code


def test_an_error_keeps_the_client_id_of_the_message() -> None:
    with pytest.raises(FrameError) as caught:
        parse({"type": "message", "text": " ", "client_id": "m-1"})
    assert caught.value.frame() == {
        "type": "error",
        "code": "empty",
        "message": "The message is empty.",
        "client_id": "m-1",
    }


@pytest.mark.parametrize(
    ("lang", "word"), [("en", "team"), ("zh", "客服"), ("zh-TW", "客服"), ("fr", "team"), ("", "team")]
)
def test_the_handoff_texts_follow_the_language(lang: str, word: str) -> None:
    assert word in frames.handoff_unavailable(lang)["message"]
    assert word in frames.handoff_unavailable(lang, timed_out=True)["message"]
    assert "3" in frames.handoff_waiting(3, lang)["message"]


def test_agent_notices_name_the_agent_in_the_visitors_language() -> None:
    assert frames.agent_joined("Ann", "en") == {
        "type": "agent.joined",
        "agent": "Ann",
        "message": "Ann joined the conversation.",
    }
    left = frames.agent_left("Ann", "bot", "zh-CN")
    assert (left["type"], left["agent"], left["reason"]) == ("agent.left", "Ann", "bot")
    assert "Ann" in left["message"] and "助手" in left["message"]
    assert frames.agent_left("Ann", "closed", "en")["message"] == "Ann closed the conversation."


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "contact", "email": " ann@example.com "}, Contact("ann@example.com")),
        ({"type": "typing"}, Typing()),
    ],
)
def test_contact_and_typing_frames(frame: dict[str, Any], expected: Any) -> None:
    assert parse(frame) == expected


@pytest.mark.parametrize("email", [None, 5, "", "   ", "a" * 250 + "@x.io"])
def test_a_contact_without_a_plausible_address_is_bad_email(email: Any) -> None:
    assert code_of({"type": "contact", "email": email}) == "bad_email"
