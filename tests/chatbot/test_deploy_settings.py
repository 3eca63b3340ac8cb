"""The production settings README "Deploying" documents pass Django's deployment checks,
and the responses carry the security headers (DEBUG=0, in a process of their own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "deploy-check-" + "k" * 50 + "Zq9!x",
    "ALLOWED_HOSTS": "chat.example.com",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "SECURE_SSL_REDIRECT": "1",
    "TRUST_X_FORWARDED_PROTO": "1",
    "LLM_PROVIDER": "openai",
    "LLM_MODEL": "any",
    "LLM_API_KEY": "any",
}


def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(PRODUCTION, **extra)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_the_documented_production_settings() -> None:
    done = run("manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_without_them_check_deploy_names_what_is_missing() -> None:
    done = run("manage.py", "check", "--deploy", SECURE_HSTS_SECONDS="0", SECURE_SSL_REDIRECT="0")
    assert "security.W004" in done.stdout + done.stderr and "security.W008" in done.stdout + done.stderr


def test_an_https_request_through_the_proxy_gets_hsts_and_plain_http_is_redirected() -> None:
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client(HTTP_HOST='chat.example.com')\n"
        "r = c.get('/healthz', HTTP_X_FORWARDED_PROTO='https')\n"
        "print(r.status_code, r['Strict-Transport-Security'], r['X-Content-Type-Options'],\n"
        "      r['Referrer-Policy'])\n"
        "r = c.get('/healthz')\n"
        "print(r.status_code, r['Location'])\n"
    )
    done = run("-c", script, DJANGO_SETTINGS_MODULE="chatbot.settings")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()[-2:]
    assert first == "200 max-age=31536000; includeSubDomains; preload nosniff same-origin"
    assert second == "301 https://chat.example.com/healthz"
