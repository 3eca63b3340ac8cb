from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from knowledge.models import Entry
from knowledge.services import entry_upsert
from tests.factories import make_bot

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_kb_import_reports_what_it_created_then_updated() -> None:
    bot = make_bot(name="Shop")
    out, _ = run("kb_import", str(DATA / "kb_good.csv"), f"--bot={bot.public_key}")
    assert out == "Imported 3 entries into 'Shop': 3 created, 0 updated.\n"
    out, _ = run("kb_import", str(DATA / "kb_good.csv"), f"--bot={bot.public_key}")
    assert out == "Imported 3 entries into 'Shop': 0 created, 3 updated.\n"
    assert Entry.objects.filter(bot=bot).count() == 3


def test_kb_import_rejects_a_bad_file_whole_and_lists_every_problem() -> None:
    bot = make_bot()
    entry_upsert(bot=bot, external_id="ship-1", question="How long is shipping?", answer="old answer")
    with pytest.raises(CommandError) as info:
        run("kb_import", str(DATA / "kb_bad.csv"), f"--bot={bot.public_key}")
    message = str(info.value)
    assert message.startswith(f"{DATA / 'kb_bad.csv'}: nothing imported, 6 problems:\n")
    assert [line.split(":")[0] for line in message.splitlines()[1:]] == [
        "line 3",
        "line 4",
        "line 7",
        "line 8",
        "line 9",
        "line 10",
    ]
    assert Entry.objects.count() == 1
    unchanged = Entry.objects.get()
    assert (unchanged.answer, unchanged.alternatives.count()) == ("old answer", 0)


def test_kb_import_takes_the_format_from_the_option_over_the_extension(tmp_path: Path) -> None:
    bot = make_bot()
    path = tmp_path / "kb.txt"
    path.write_bytes((DATA / "kb_good.json").read_bytes())
    run("kb_import", str(path), f"--bot={bot.public_key}", "--format", "json")
    assert set(Entry.objects.values_list("external_id", flat=True)) == {"ship-1", "zh-ship-1"}
    with pytest.raises(CommandError, match="line 1: missing required column"):
        run("kb_import", str(path), f"--bot={bot.public_key}", "--format", "csv")


def test_kb_import_names_an_unknown_bot_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No bot has the public key 'nope'"):
        run("kb_import", str(DATA / "kb_good.csv"), "--bot", "nope")
    with pytest.raises(CommandError, match=r"File not found: .*missing\.csv"):
        run("kb_import", str(tmp_path / "missing.csv"), f"--bot={make_bot().public_key}")
    assert not Entry.objects.exists()


def test_kb_export_writes_csv_to_stdout_by_default() -> None:
    bot = make_bot()
    entry_upsert(bot=bot, external_id="a", question="Q?", answer="A.", alternatives=["q2"], tags=["t"])
    out, err = run("kb_export", f"--bot={bot.public_key}")
    assert out == "\ufeffid,question,answer,alternatives,tags,active\r\na,Q?,A.,q2,t,true\r\n"
    assert err == ""


def test_kb_export_writes_a_file_in_the_format_of_its_extension(tmp_path: Path) -> None:
    bot = make_bot(name="Shop")
    run("kb_import", str(DATA / "kb_good.json"), f"--bot={bot.public_key}")
    out, _ = run("kb_export", f"--bot={bot.public_key}", "-o", str(tmp_path / "kb.json"))
    assert out == f"Exported 2 entries of 'Shop' to {tmp_path / 'kb.json'} (json).\n"
    exported = json.loads((tmp_path / "kb.json").read_text(encoding="utf-8"))
    assert [item["id"] for item in exported] == ["ship-1", "zh-ship-1"]
    run("kb_export", f"--bot={bot.public_key}", "--format", "csv", "-o", str(tmp_path / "kb.json"))
    assert (tmp_path / "kb.json").read_bytes().startswith(b"\xef\xbb\xbfid,question")


def test_kb_export_names_an_unknown_bot() -> None:
    with pytest.raises(CommandError, match="No bot has the public key 'nope'"):
        run("kb_export", "--bot", "nope")


def test_kb_export_refuses_csv_that_would_lose_data() -> None:
    bot = make_bot()
    entry_upsert(bot=bot, question="Q?", answer="A.", alternatives=["this|that"])
    with pytest.raises(CommandError, match="export JSON instead"):
        run("kb_export", f"--bot={bot.public_key}")


def test_kb_import_exits_non_zero_with_the_report_on_stderr(tmp_path: Path) -> None:
    # A real process, for the exit status; the file is checked before any database access.
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}"}
    result = subprocess.run(
        [sys.executable, "manage.py", "kb_import", str(DATA / "kb_bad.csv"), "--bot", "any", "--skip-checks"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "CommandError:" in result.stderr
    assert "nothing imported, 6 problems" in result.stderr
    assert "line 3: question: missing or empty" in result.stderr
    assert "line 10: 7 cells but the header has 6 columns" in result.stderr
