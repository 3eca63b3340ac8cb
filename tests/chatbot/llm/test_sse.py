from __future__ import annotations

import pytest

from chatbot.llm.sse import SSEDecoder, SSEEvent


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def test_it_decodes_one_event() -> None:
    assert decode(b"data: hello\n\n") == [SSEEvent(data="hello")]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_it_accepts_every_line_ending(newline: bytes) -> None:
    stream = b"event: result" + newline + b"data: a" + newline + newline + b"data: b" + newline + newline
    assert decode(stream) == [SSEEvent(data="a", event="result"), SSEEvent(data="b")]


def test_it_joins_an_event_split_across_network_chunks_at_every_byte() -> None:
    stream = 'id: 7\nevent: result\ndata: {"text": "你好"}\n\ndata: [DONE]\n\n'.encode()
    for cut in range(1, len(stream)):
        events = decode(stream[:cut], stream[cut:])
        assert [e.data for e in events] == ['{"text": "你好"}', "[DONE]"], cut
        assert events[0].id == "7" and events[0].event == "result"


def test_it_treats_a_crlf_split_between_chunks_as_one_line_end() -> None:
    assert decode(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == [SSEEvent(data="a"), SSEEvent(data="b")]


def test_it_ignores_comments_and_unknown_fields() -> None:
    stream = b": keep-alive\n:HTTP_STATUS/200\nfoo: bar\ndata: x\n\n"
    assert decode(stream) == [SSEEvent(data="x")]


def test_it_joins_multi_line_data_with_newlines() -> None:
    assert decode(b"data: first\ndata:second\ndata:  third\n\n") == [SSEEvent(data="first\nsecond\n third")]


def test_it_dispatches_a_last_event_without_a_trailing_newline() -> None:
    assert decode(b"data: a\n\ndata: [DONE]") == [SSEEvent(data="a"), SSEEvent(data="[DONE]")]
    assert decode(b"data: a\n") == [SSEEvent(data="a")]


def test_it_skips_events_without_data() -> None:
    assert decode(b"event: ping\n\n\n\ndata: x\n\n") == [SSEEvent(data="x")]


def test_it_parses_a_field_without_a_colon_and_a_retry() -> None:
    assert decode(b"data\nretry: 1500\n\n") == [SSEEvent(data="", retry=1500)]


def test_it_keeps_the_last_event_id_and_resets_the_event_type() -> None:
    events = decode(b"id: 1\nevent: error\ndata: a\n\ndata: b\n\n")
    assert [(e.id, e.event) for e in events] == [("1", "error"), ("1", "message")]


def test_it_replaces_invalid_utf8_instead_of_failing() -> None:
    assert decode(b"data: \xff\n\n") == [SSEEvent(data="\ufffd")]
