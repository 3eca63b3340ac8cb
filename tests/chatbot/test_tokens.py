"""Visitor tokens: signed with the bot's secret, bound to the bot, opaque to the browser."""

from __future__ import annotations

import uuid

import pytest
from django.core import signing

from chatbot.models import Bot
from chatbot.tokens import SALT, visitor_token_read, visitor_token_sign

UID = uuid.UUID("5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f")


def bot(pk: int = 1, secret: str = "s" * 43) -> Bot:
    return Bot(pk=pk, name="b", secret=secret)


def test_it_reads_back_the_uid_it_signed() -> None:
    token = visitor_token_sign(bot=bot(), uid=UID)
    assert visitor_token_read(bot=bot(), token=token) == UID


def test_the_token_does_not_name_the_uid_in_the_clear_nor_the_secret() -> None:
    token = visitor_token_sign(bot=bot(), uid=UID)
    assert "s" * 43 not in token and ":" in token


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        12,
        ["a"],
        str(UID),
        "no-signature-here",
        "x" * 501,
        "é:é:é",
        "\ud800:abc:def",  # a lone surrogate: signing can't even encode it
        "abc:def:\udfff",
        "\x00:\x00:\x00",
        ":",
        "::::",
    ],
)
def test_garbage_is_no_visitor(token: object) -> None:
    assert visitor_token_read(bot=bot(), token=token) is None


def test_a_tampered_token_is_no_visitor() -> None:
    token = visitor_token_sign(bot=bot(), uid=UID)
    _, rest = token.split(":", 1)
    forged = signing.b64_encode(b'{"b":1,"v":"00000000-0000-0000-0000-000000000000"}').decode()
    assert visitor_token_read(bot=bot(), token=f"{forged}:{rest}") is None
    assert visitor_token_read(bot=bot(), token=token[:-1] + ("A" if token[-1] != "A" else "B")) is None


def test_a_token_is_only_good_for_its_own_bot() -> None:
    token = visitor_token_sign(bot=bot(pk=1), uid=UID)
    assert visitor_token_read(bot=bot(pk=2, secret="t" * 43), token=token) is None
    # Same secret (never the case in practice), other bot id: still refused.
    assert visitor_token_read(bot=bot(pk=2), token=token) is None


@pytest.mark.parametrize(
    "payload", [{"b": 1}, {"b": 1, "v": "not-a-uuid"}, ["b", 1], {"b": "1", "v": str(UID)}]
)
def test_a_well_signed_but_malformed_payload_is_no_visitor(payload: object) -> None:
    token = signing.dumps(payload, key=bot().secret, salt=SALT)
    assert visitor_token_read(bot=bot(), token=token) is None


def test_a_token_with_a_lone_surrogate_next_to_a_valid_signature_is_no_visitor() -> None:
    token = visitor_token_sign(bot=bot(), uid=UID)
    assert visitor_token_read(bot=bot(), token=token + "\ud800") is None
    assert visitor_token_read(bot=bot(), token="\ud800" + token) is None
