from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from chatbot.models import Bot
from knowledge.docs.retrieval_eval import normalise_url
from knowledge.document_models import Source
from tests.factories import make_bot
from tests.knowledge.docs.test_retrieval import HELP_CENTER, add_page

pytestmark = pytest.mark.django_db(transaction=True)

QUESTIONS = """query,expected_url
How do I return a watch?,https://help.example.com/returns
How much is shipping?,https://help.example.com/shipping/
Which payment methods do you accept?,https://help.example.com/
退款多久到账,https://help.example.com/zh/returns
What's the weather like in Paris tomorrow?,
How do I bake a chocolate cake?,
"""


@pytest.fixture
def help_center() -> Bot:
    bot = make_bot(name="Watches", embedding_model="multilingual-e5-small")
    for url, (title, sections) in HELP_CENTER.items():
        add_page(bot, url, title, sections)
    # The payment page was found by a crawl from the site's root: the root counts as its page.
    crawl = Source.objects.create(
        bot=bot, kind=Source.Kind.CRAWL, url="https://help.example.com/", status="ready"
    )
    Source.objects.filter(url="https://help.example.com/payment").update(parent=crawl, kind=Source.Kind.PAGE)
    return bot


def run(bot: Bot, path: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("docs_evaluate", "--bot", bot.public_key, "--queries", str(path), *args, stdout=out)
    return out.getvalue()


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "questions.csv"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_it_prints_recall_of_the_right_page_and_the_out_of_scope_share(
    help_center: Bot, tmp_path: Path
) -> None:
    out = run(help_center, write(tmp_path, QUESTIONS))
    assert "Questions: 6 (4 answerable, 2 out of scope)" in out
    assert "Right page among the passages: @1 1.000  @3 1.000  @5 1.000" in out
    assert "Out-of-scope questions that retrieved nothing: 1.000" in out
    assert "Time per search: median" in out
    assert "no source of this bot" not in out


def test_it_prints_json_with_misses_and_unknown_expected_urls(help_center: Bot, tmp_path: Path) -> None:
    questions = QUESTIONS + "How much is shipping?,https://help.example.com/returns\n"
    questions += "Do you sell cars?,https://elsewhere.example.com/cars\n"
    figures = json.loads(run(help_center, write(tmp_path, questions), "--json"))
    assert (figures["queries"], figures["answerable"], figures["out_of_scope"]) == (8, 6, 2)
    assert figures["recall_at_1"] == round(4 / 6, 4)
    assert figures["out_of_scope_nothing"] == 1.0
    assert figures["unknown_expected_urls"] == ["https://elsewhere.example.com/cars"]
    missed = {m["query"]: m for m in figures["misses"]}
    assert missed["How much is shipping?"]["got"][0] == "https://help.example.com/shipping"
    assert figures["p50_ms"] >= 0


def test_a_bot_without_documents_retrieves_nothing(tmp_path: Path) -> None:
    figures = json.loads(run(make_bot(), write(tmp_path, QUESTIONS), "--json"))
    assert (figures["recall_at_1"], figures["recall_at_5"], figures["out_of_scope_nothing"]) == (
        0.0,
        0.0,
        1.0,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"question,url\nhi,\n", "lacks the column(s) expected_url, query"),
        (b"query\nhi\n", "lacks the column(s) expected_url"),
        ("query,expected_url\ncaf\u00e9,\n".encode("latin-1"), "not UTF-8"),
        (b"query,expected_url\n", "no questions"),
        (
            b"query,expected_url\n,https://a.example/\nok,\n  ,\n",
            "line 2: the query is empty\nline 4: the query",
        ),
        (b"query,expected_url\nhi,javascript:alert(1)\n", "line 2: expected_url is not an http(s) URL"),
    ],
)
def test_a_bad_questions_file_is_refused_with_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    with pytest.raises(CommandError, match="cannot evaluate") as caught:
        run(make_bot(), write(tmp_path, content))
    assert message in str(caught.value)


def test_a_missing_file_or_bot_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="File not found"):
        run(make_bot(), tmp_path / "nope.csv")
    with pytest.raises(CommandError, match="No bot has the public key"):
        call_command("docs_evaluate", "--bot", "nokey", "--queries", str(write(tmp_path, QUESTIONS)))


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTPS://Help.Example.com/returns/", "https://help.example.com/returns"),
        ("https://help.example.com/returns#refunds", "https://help.example.com/returns"),
        ("https://help.example.com/faq?id=3", "https://help.example.com/faq?id=3"),
    ],
)
def test_urls_are_compared_without_fragment_slash_or_case(url: str, normal: str) -> None:
    assert normalise_url(url) == normal
