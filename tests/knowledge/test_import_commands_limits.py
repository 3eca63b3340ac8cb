"""kb_import refuses every bad file with its report and keeps nothing; kb_export
neutralises formulas. The parser's own cases are in test_io_limits."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from knowledge.models import Entry
from knowledge.services import entry_upsert
from tests.factories import make_bot
from tests.knowledge.bad_kb_files import BAD_FILES, BadFile, bad_files

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


@bad_files
def test_kb_import_refuses_each_bad_file_and_keeps_nothing(tmp_path: Path, bad: BadFile) -> None:
    bot = make_bot()
    entry_upsert(bot=bot, external_id="keep", question="Kept?", answer="unchanged")
    path = tmp_path / bad.filename
    path.write_bytes(bad.data)
    with pytest.raises(CommandError) as info:
        call_command("kb_import", str(path), f"--bot={bot.public_key}", stdout=io.StringIO())
    assert str(info.value).splitlines() == [f"{path}: nothing imported, 1 problem:", *bad.report]
    assert list(Entry.objects.values_list("external_id", "answer")) == [("keep", "unchanged")]


@pytest.mark.parametrize("name", ["json-nested-100000-deep", "json-lone-surrogate-in-question"])
def test_kb_import_exits_non_zero_without_a_traceback(tmp_path: Path, name: str) -> None:
    # A real process, for the exit status; the file is refused before any database access.
    bad = BAD_FILES[name]
    path = tmp_path / bad.filename
    path.write_bytes(bad.data)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}"}
    result = subprocess.run(
        [sys.executable, "manage.py", "kb_import", str(path), "--bot", "any", "--skip-checks"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == bad.report[-1]


def test_kb_export_neutralises_formula_cells() -> None:
    bot = make_bot()
    entry_upsert(bot=bot, external_id="@x", question="=1+1", answer="+cmd|' /C calc'!A0")
    out = io.StringIO()
    call_command("kb_export", f"--bot={bot.public_key}", stdout=out)
    rows = list(csv.reader(io.StringIO(out.getvalue().removeprefix("\ufeff"), newline="")))
    assert rows[1] == ["'@x", "'=1+1", "'+cmd|' /C calc'!A0", "", "", "true"]
