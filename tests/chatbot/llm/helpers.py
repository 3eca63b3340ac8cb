from __future__ import annotations

from contextlib import aclosing

from chatbot.llm import ChatMessage, ChatRequest, ChatResult, Delta, LLMError, stream_chat


def ask(text: str, **params: object) -> ChatRequest:
    messages = (ChatMessage("system", "You are a test."), ChatMessage("user", text))
    return ChatRequest(messages=messages, **params)  # type: ignore[arg-type]


async def collect(request: ChatRequest, **kwargs: object) -> tuple[list[str], ChatResult]:
    deltas: list[str] = []
    result: ChatResult | None = None
    async with aclosing(stream_chat(request, **kwargs)) as items:  # type: ignore[arg-type]
        async for item in items:
            if isinstance(item, Delta):
                assert result is None, "a delta after the result"
                deltas.append(item.text)
            else:
                assert result is None, "two results"
                result = item
    assert result is not None
    return deltas, result


async def failure(request: ChatRequest, **kwargs: object) -> tuple[list[str], LLMError]:
    deltas: list[str] = []
    try:
        async with aclosing(stream_chat(request, **kwargs)) as items:  # type: ignore[arg-type]
            async for item in items:
                assert isinstance(item, Delta), "a result instead of an error"
                deltas.append(item.text)
    except LLMError as err:
        return deltas, err
    raise AssertionError("no error")
