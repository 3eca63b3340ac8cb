"""Incremental server-sent-events decoder (WHATWG rules).

Feed it raw byte chunks as they arrive from the network; it returns the events completed
so far. Lines end in CRLF, LF or CR, and a chunk may end anywhere, even between CR and LF
or inside a multi-byte UTF-8 character, so lines are split as bytes and decoded whole.
Comment lines (``:``) are ignored, ``data`` lines of one event are joined with ``\\n``.
One deliberate leniency: at the end of the stream a pending event without its closing
blank line is still dispatched (some servers end with ``data: [DONE]`` and no newline).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    __slots__ = ("_buffer", "_data", "_event", "_id", "_retry", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SSEEvent] = []
        start = 0
        size = len(buffer)
        while start < size:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf != -1 else size)
            end = cr if cr != -1 else lf
            if end == -1:
                break
            line = buffer[start:end]
            if buffer[end : end + 1] == b"\r":
                if end + 1 == size:
                    self._skip_lf = True
                    start = size
                else:
                    start = end + 2 if buffer[end + 1 : end + 2] == b"\n" else end + 1
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: the last line and event, even without their newlines."""
        events: list[SSEEvent] = []
        if self._buffer:
            event = self._line(self._buffer)
            self._buffer = b""
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(
            data="\n".join(self._data), event=self._event or "message", id=self._id, retry=self._retry
        )
        self._data = []
        self._event = ""
        return event
