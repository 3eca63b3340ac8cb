"""The fake provider's embeddings endpoint (``POST .../embeddings``) in the three providers'
flavours, chosen by the path like the chat formats:

    POST /v1/embeddings                     OpenAI
    POST /compatible-mode/v1/embeddings     DashScope's OpenAI-compatible mode (at most 10 texts)
    POST /api/paas/v4/embeddings            Zhipu (at most 64 texts, no encoding_format)

Vectors are deterministic: a hashed bag of the text's character 1-3-grams (lower-cased),
so texts that share words get similar vectors and tests can assert a ranking. They have
``dimensions`` values (default ``FAKE_DIM``), are deliberately not of unit length (the
client must normalise), and ``data`` lists them in reverse order (the client must go by
``index``). Failures are scripted as for chat, by an ``X-Fake-LLM`` header or a
``[[fake: ...]]`` marker in any input text: ``status``, ``code``, ``retry_after(_ms)``,
``headers_delay_ms``, ``times``, ``malformed_after=0`` (a body that is not JSON) and
``bad_vector=nan|short|missing|index|zero`` (one vector NaN, one value short, one item
missing, an index twice, all zeros).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING, Any

from devtools.fake_llm import wire

if TYPE_CHECKING:
    from devtools.fake_llm.script import Script

FAKE_DIM = 256
ALLOWED = {
    "openai": {"model", "input", "encoding_format", "dimensions", "user"},
    "dashscope": {"model", "input", "encoding_format", "dimensions"},
    "zhipu": {"model", "input", "dimensions"},
}
MAX_INPUTS = {"openai": 2048, "dashscope": 10, "zhipu": 64}
DIMENSIONS = {
    "dashscope": {2048, 1536, 1024, 768, 512, 256, 128, 64},  # text-embedding-v4 (v3: 1024 and less)
    "zhipu": {2048, 1024, 512, 256},  # embedding-3
}


def format_for(path: str) -> str:
    if "/compatible-mode/" in path:
        return "dashscope"
    if "/paas/" in path or "zhipu" in path:
        return "zhipu"
    return "openai"


def error_format(fmt: str) -> str:
    """The shape of error bodies: DashScope's compatible mode answers errors like OpenAI."""
    return "zhipu" if fmt == "zhipu" else "openai"


def inputs(body: Any) -> list[str]:
    value = body.get("input") if isinstance(body, dict) else None
    if isinstance(value, str):
        return [value]
    return [t for t in value if isinstance(t, str)] if isinstance(value, list) else []


def validate(fmt: str, body: Any) -> tuple[int, str] | None:
    """(400, why) when the request is not what the real provider accepts."""
    problem = wire.body_problem(body, ALLOWED[fmt])
    if problem:
        return problem
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        return 400, "input must be a non-empty string or a non-empty list of them"
    if len(texts) > MAX_INPUTS[fmt]:
        return 400, f"batch size is invalid, it should not be larger than {MAX_INPUTS[fmt]}"
    if body.get("encoding_format", "float") != "float":
        return 400, "the fake serves encoding_format float only"
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            return 400, "dimensions must be a positive integer"
        if fmt in DIMENSIONS and dimensions not in DIMENSIONS[fmt]:
            return 400, f"dimensions must be one of {sorted(DIMENSIONS[fmt])}"
    return None


def fake_vector(text: str, dim: int = FAKE_DIM) -> list[float]:
    """The fake's embedding of ``text``: signed, hashed character 1-3-grams."""
    values = [0.0] * dim
    padded = f" {text.lower()} "
    for n in (1, 2, 3):
        for start in range(len(padded) - n + 1):
            digest = hashlib.blake2b(padded[start : start + n].encode(), digest_size=8).digest()
            slot = int.from_bytes(digest[:4], "little") % dim
            values[slot] += n if digest[4] & 1 else -n  # longer n-grams say more
    return [round(v, 6) for v in values]


def _spoil(data: list[dict[str, Any]], how: str) -> None:
    if how == "nan":
        data[0]["embedding"][0] = float("nan")  # json.dumps writes NaN, which json.loads reads
    elif how == "short":
        data[0]["embedding"] = data[0]["embedding"][:-1]
    elif how == "missing":
        del data[0]
    elif how == "index" and len(data) > 1:
        data[0]["index"] = data[1]["index"]
    elif how == "zero":
        data[0]["embedding"] = [0.0] * len(data[0]["embedding"])
    elif how:
        raise ValueError(f"unknown bad_vector {how!r}")


async def send(writer: asyncio.StreamWriter, body: dict[str, Any], script: Script, rid: str) -> None:
    headers = {"x-request-id": rid}
    if script.malformed_after is not None:
        await wire.send_raw(writer, 200, b'{"object": "list", "data": [{"index": 0, "embe', headers)
        return
    texts = inputs(body)
    dim = body.get("dimensions") or FAKE_DIM
    data = [
        {"object": "embedding", "index": index, "embedding": fake_vector(text, dim)}
        for index, text in enumerate(texts)
    ][::-1]
    _spoil(data, script.bad_vector)
    tokens = sum(len(t) for t in texts) // 4 + 1
    payload = {
        "object": "list",
        "model": body["model"],
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    await wire.send_raw(writer, 200, json.dumps(payload).encode(), headers)
