from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser 'admin' with a random password, printed once, if no superuser exists."

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("A superuser already exists; no new one created.")
            return
        username = "admin"
        if users.objects.filter(username=username).exists():
            username = f"admin-{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            self.style.SUCCESS(f"Created superuser {username!r}. Its password (shown only once):")
        )
        self.stdout.write(f"    {password}")
