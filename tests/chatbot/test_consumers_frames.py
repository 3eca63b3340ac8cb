"""Parsing client frames (chatbot.chat.frames): edge cases without a websocket."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from agents.frames import agent_frame_parse
from chatbot.chat import frames
from chatbot.chat.frames import (
    MAX_DEPTH,
    Contact,
    FrameError,
    Hello,
    Ping,
    Rate,
    Say,
    Typing,
    encode,
    frame_bytes,
    frame_parse,
)


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


# --- Bounds: every frame of both sockets (chatbot.bounded_json) -----------------------

BOTH = pytest.mark.parametrize("parse_frame", [frame_parse, agent_frame_parse], ids=["chat", "agent"])


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@BOTH
@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (nested(1000), "nest at most 32"),
        ('{"type": "ping", "x": ' + nested(MAX_DEPTH) + "}", "nest at most 32"),
        ('{"a": ' * 5000, "nest at most 32"),  # never closed
        ('{"type": "ping", "x": "a\\\\", "y": ' + nested(40) + "}", "nest"),  # an escaped backslash ends
        ('{"type": "feedback", "id": 9223372036854775808, "rating": "up"}', "Integers"),
        ('{"type": "feedback", "id": -9223372036854775809, "rating": "up"}', "Integers"),
        ('{"type": "hello", "after": ' + "9" * 5000 + "}", "Integers"),
        ('{"type": "hello", "after": NaN}', "NaN is not JSON"),
        ('{"type": "hello", "after": -Infinity}', "-Infinity is not JSON"),
        ('{"type": "ping"', "valid JSON"),
        ('{"type": "ping", "x": "\\ud800\\"}', "valid JSON"),  # an escaped quote: unterminated
        ("[]", "JSON object"),
    ],
)
def test_a_frame_outside_the_bounds_is_bad_json(parse_frame: Callable[..., Any], raw: str, says: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame(raw, max_chars=20)
    assert caught.value.code == "bad_json"
    assert says in caught.value.message


@BOTH
@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "ping", "x": ' + nested(MAX_DEPTH - 1) + "}",  # the object is the 32nd level
        '{"type": "ping", "x": "' + "[" * 5000 + '"}',  # brackets in a string do not nest
        '{"type": "ping", "x": "\\"' + "{" * 40 + '"}',  # nor after an escaped quote
        '{"type": "ping", "x": [' + "[], " * 5000 + "[]]}",  # wide is not deep
        '{"type": "ping", "n": 9223372036854775807, "m": -9223372036854775808, "f": 1e999}',
        '{"type": "ping", "s": "\\ud800", "\\udfff": 0}',
    ],
)
def test_a_frame_within_the_bounds_parses(parse_frame: Callable[..., Any], raw: str) -> None:
    assert parse_frame(raw, max_chars=20) == Ping()


@pytest.mark.parametrize(
    "raw",
    [
        '"' + '\\"' * 16000,  # an unterminated string of escaped quotes
        "[" * 16000,
        '["' * 16000,
        '{"a":[' * 5000,
    ],
)
def test_the_bounds_cost_linear_time_on_hostile_frames(raw: str) -> None:
    started = time.perf_counter()
    with pytest.raises(FrameError):
        frame_parse(raw, max_chars=20)
    # About 1 ms each here; a scan that backtracked would take seconds on 32 KB.
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("text_data", "bytes_data", "size"),
    [("ab", None, 2), ("é你", None, 5), ("\ud800", None, 3), (None, b"\xff\xfe", 2), (None, None, 0)],
)
def test_a_frame_is_measured_in_bytes_without_raising(
    text_data: str | None, bytes_data: bytes | None, size: int
) -> None:
    assert frame_bytes(text_data, bytes_data) == size
