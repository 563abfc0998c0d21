"""Errors that reach the user: each names the field, the value and what would be accepted."""

from __future__ import annotations

import difflib


class FsvError(Exception):
    """An error fsv reports to the user without a traceback (exit status 2)."""


class ConfigError(FsvError):
    def __init__(self, field: str, value, accepted: str, source: str | None = None):
        self.field, self.value, self.accepted = field, value, accepted
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {_short(repr(value), 300)} is not accepted; {_short(str(accepted), 2000)}")


def _short(text: str, limit: int) -> str:
    """A message stays readable when the value is a 200,000-item list."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def did_you_mean(value, choices) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    listed = ", ".join(str(c) for c in choices)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}accepted: {listed}"
