"""How the user commands get a password: generated, from stdin, or prompted twice (no echo)."""

from __future__ import annotations

import getpass
import secrets
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser


def add_password_arguments(parser: CommandParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--generate",
        action="store_true",
        help="Generate a random password and print it (the only time a password is shown).",
    )
    source.add_argument(
        "--password-stdin",
        action="store_true",
        help="Read the password from the first line of standard input (for scripts).",
    )


def read_password(options: dict[str, Any], stdin: Any = None) -> tuple[str, bool]:
    """The password and whether it was generated (and so must be shown once)."""
    if options.get("generate"):
        return secrets.token_urlsafe(18), True
    stream = stdin if stdin is not None else sys.stdin
    if options.get("password_stdin"):
        password = stream.readline().rstrip("\r\n")
        if not password:
            raise CommandError("No password on standard input.")
        return password, False
    if not stream.isatty():
        raise CommandError("No terminal to prompt on: use --password-stdin or --generate.")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise CommandError("The two passwords differ.")
    return first, False
