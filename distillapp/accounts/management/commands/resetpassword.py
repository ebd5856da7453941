from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from distillapp.accounts.management._password import add_password_arguments, read_password
from distillapp.accounts.services import user_set_password


class Command(BaseCommand):
    stealth_options = ("stdin",)
    help = (
        "Set a new password for a user. Prompts for it unless --password-stdin or --generate "
        "is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        add_password_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        password, generated = read_password(options, options.get("stdin"))
        try:
            user_set_password(user=user, password=password, actor=None)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"Password of {user.username} changed.")
        if generated:
            self.stdout.write(f"Password: {password}")
