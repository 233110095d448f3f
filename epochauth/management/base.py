"""The base of epochauth's management commands."""

from __future__ import annotations

import time
import unicodedata
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections
from django.utils.dateparse import parse_duration


def check_text(value: Any) -> None:
    """Raise CommandError for a string (or list of strings) that is not printable text.

    Bytes that are not UTF-8 reach ``sys.argv`` as lone surrogates (PEP 383), which fail with a
    traceback wherever they are encoded (the database driver, an audit row, the terminal); control
    characters would reach audit rows and the operator's terminal as they are.
    """
    for item in value if isinstance(value, list | tuple) else [value]:
        if not isinstance(item, str):
            continue
        try:
            item.encode()
        except UnicodeEncodeError:
            raise CommandError(f"Not valid UTF-8: {item!r}") from None
        if any(unicodedata.category(char) == "Cc" for char in item):
            raise CommandError(f"Control character in {item!r}")


def duration(value: str) -> timedelta:
    """Seconds (``3600``), a suffix (``90m``, ``12h``, ``30d``) or a Django duration (``1 00:00:00``)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip()
    try:
        if text[-1:] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(seconds=float(text))
    except ValueError:
        parsed = parse_duration(text)
        if parsed is None:
            raise ValueError(f"not a duration: {value!r}") from None
        return parsed


class EpochauthCommand(BaseCommand):
    """Checks every argument with ``check_text`` before the command (or Django's checks) can use it."""

    def execute(self, *args: Any, **options: Any) -> Any:
        for value in (*args, *options.values()):
            check_text(value)
        return super().execute(*args, **options)


class LoopingCommand(EpochauthCommand):
    """A worker's command: :meth:`once` now, or with ``--loop`` every ``--interval`` until stopped,
    going on when the database cannot be read (it says so and tries again)."""

    #: What one round does, for the ``--loop`` help ("Keep draining...").
    doing = "running"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop",
            action="store_true",
            help=f"Keep {self.doing}, every --interval, until stopped.",
        )
        parser.add_argument(
            "--interval",
            default="5s",
            help="The wait between rounds with --loop (seconds, or 30s, 5m...; default 5s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            interval = duration(options["interval"]).total_seconds()
        except ValueError:
            interval = 0
        if interval <= 0:
            raise CommandError("--interval must be a duration of more than zero")
        while True:
            try:
                self.once(last=not options["loop"])
            except DatabaseError as exc:
                if not options["loop"]:
                    raise CommandError(f"The database cannot be read: {exc}") from None
                self.stderr.write(f"The database cannot be read: {exc}")
            if not options["loop"]:
                return
            connections.close_all()
            time.sleep(interval)

    def once(self, *, last: bool) -> None:
        """One round; ``last``: no other follows (a one-off run may say more, or fail)."""
        raise NotImplementedError
