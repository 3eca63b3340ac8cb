"""Shared start-up for benchmark scripts: Django settings, dataset paths, tidy output."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("DATASETS_DIR", ROOT.parent / "shared" / "datasets"))


def setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LOG_LEVEL", "warning")
    warnings.filterwarnings("ignore")
    import django

    django.setup()


def require(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"dataset not found: {path} (set DATASETS_DIR)")
    return path
