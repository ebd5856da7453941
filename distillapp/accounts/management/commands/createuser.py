from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from distillapp.accounts.management._password import add_password_arguments, read_password
from distillapp.accounts.services import user_create


class Command(BaseCommand):
    stealth_options = ("stdin",)
    help = (
        "Create a user (who can then create an organisation or accept an invitation). "
        "Prompts for the password unless --password-stdin or --generate is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        add_password_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        password, generated = read_password(options, options.get("stdin"))
        try:
            user = user_create(username=options["username"], password=password)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"Created user {user.username}.")
        if generated:
            self.stdout.write(f"Password: {password}")
