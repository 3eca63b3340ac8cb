"""Measure a bot's passage retrieval against labelled questions (``docs_evaluate``).

Questions come as CSV ``query,expected_url``; an empty ``expected_url`` means nothing in
the documents answers it. A retrieved passage is on the right page when its source's URL,
or the URL of the sitemap or crawl that found the page, is the expected one (compared
without fragment, trailing slash or case in scheme and host).
"""

from __future__ import annotations

import csv
import io
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from channels.db import database_sync_to_async

from chatbot.models import Bot
from knowledge.docs.retrieval import PassageHit, passages_search
from knowledge.document_models import Source

KS = (1, 3, 5)
MAX_MISSES = 20  # answerable questions listed whose page was not among the passages


class QueriesInvalid(ValueError):
    """The questions file can't be used (the message says why, with line numbers)."""


@dataclass(frozen=True)
class DocQuery:
    query: str
    expected_url: str  # "": nothing in the documents answers it


def read_doc_queries(data: bytes) -> list[DocQuery]:
    """Parse ``query,expected_url`` CSV (UTF-8, optional BOM); every bad line reported at once."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise QueriesInvalid(f"the file is not UTF-8 ({err.reason} at byte {err.start})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = {(name or "").strip() for name in reader.fieldnames or ()}
    if not reader.fieldnames:
        raise QueriesInvalid("the file is empty: a header query,expected_url and one question a line")
    if not {"query", "expected_url"} <= columns:
        missing = ", ".join(sorted({"query", "expected_url"} - columns))
        raise QueriesInvalid(f"line 1: the header lacks the column(s) {missing} (query,expected_url)")
    queries: list[DocQuery] = []
    errors: list[str] = []
    for record in reader:
        cells = {(k or "").strip(): (v or "").strip() for k, v in record.items() if isinstance(v, str)}
        if not cells.get("query"):
            errors.append(f"line {reader.line_num}: the query is empty")
            continue
        expected = cells.get("expected_url", "")
        if expected and urlsplit(expected).scheme not in ("http", "https"):
            errors.append(f"line {reader.line_num}: expected_url is not an http(s) URL: {expected!r}")
            continue
        queries.append(DocQuery(cells["query"], expected))
    if errors:
        raise QueriesInvalid("\n".join(errors))
    if not queries:
        raise QueriesInvalid("the file has a header but no questions")
    return queries


def normalise_url(url: str) -> str:
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def _page_urls(bot: Bot) -> dict[int, set[str]]:
    """Each source's URLs that count as its page: its own and its sitemap's or crawl's."""
    rows = Source.objects.filter(bot=bot).values_list("id", "url", "parent__url")
    return {pk: {normalise_url(u) for u in (url, parent) if u} for pk, url, parent in rows}


def _rank_of_right_page(hits: Sequence[PassageHit], expected: str, pages: dict[int, set[str]]) -> int | None:
    """1-based rank of the first passage on the expected page, or None."""
    for rank, hit in enumerate(hits, start=1):
        if expected in pages.get(hit.source_id, set()) or normalise_url(hit.url) == expected:
            return rank
    return None


async def evaluate_documents(bot: Bot, queries: Sequence[DocQuery], *, limit: int = 5) -> dict[str, Any]:
    """Recall@1/3/5 of the right page, the share of unanswerable questions that retrieved
    nothing, and the time per search (the first search, which builds the index, not counted)."""
    pages = await database_sync_to_async(_page_urls)(bot)
    known = set().union(*pages.values()) if pages else set()
    found = {k: 0 for k in KS}
    answerable = nothing = 0
    times: list[float] = []
    misses: list[dict[str, Any]] = []
    await passages_search(bot, queries[0].query, limit=limit)  # builds the index and its fit
    for query in queries:
        started = time.perf_counter()
        hits = await passages_search(bot, query.query, limit=limit)
        times.append((time.perf_counter() - started) * 1000)
        if not query.expected_url:
            nothing += not hits
            continue
        answerable += 1
        rank = _rank_of_right_page(hits, normalise_url(query.expected_url), pages)
        for k in KS:
            found[k] += rank is not None and rank <= k
        if rank is None and len(misses) < MAX_MISSES:
            misses.append(
                {"query": query.query, "expected_url": query.expected_url, "got": [h.url for h in hits]}
            )
    out_of_scope = len(queries) - answerable
    unknown = sorted(
        {q.expected_url for q in queries if q.expected_url and normalise_url(q.expected_url) not in known}
    )
    return {
        "queries": len(queries),
        "answerable": answerable,
        "out_of_scope": out_of_scope,
        **{f"recall_at_{k}": round(found[k] / answerable, 4) if answerable else None for k in KS},
        "out_of_scope_nothing": round(nothing / out_of_scope, 4) if out_of_scope else None,
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(sorted(times)[int(0.95 * (len(times) - 1))], 2),
        "unknown_expected_urls": unknown,
        "misses": misses,
    }


def format_report(figures: dict[str, Any]) -> str:
    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"Questions: {figures['queries']} ({figures['answerable']} answerable, "
        f"{figures['out_of_scope']} out of scope)",
        "Right page among the passages: " + "  ".join(f"@{k} {share(figures[f'recall_at_{k}'])}" for k in KS),
        f"Out-of-scope questions that retrieved nothing: {share(figures['out_of_scope_nothing'])}",
        f"Time per search: median {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms",
    ]
    if figures["unknown_expected_urls"]:
        lines.append("Expected URLs that are no source of this bot (check them):")
        lines.extend(f"  {url}" for url in figures["unknown_expected_urls"])
    if figures["misses"]:
        lines.append("Answerable questions whose page was not retrieved (first ones):")
        lines.extend(f"  {m['query']!r}: expected {m['expected_url']}" for m in figures["misses"])
    return "\n".join(lines)
