"""Marking user-facing messages for translation."""

from __future__ import annotations


class Text(str):
    """A message with values to fill in: its text is the English sentence (for logs and
    tests), and it keeps the msgid and values so the portal can translate it first."""

    msgid: str
    params: dict[str, object]

    def __new__(cls, msgid: str, params: dict[str, object]) -> Text:
        text = super().__new__(cls, msgid % params)
        text.msgid = msgid
        text.params = params
        return text


def N_(message: str, **params: object) -> str:  # noqa: N802
    """Mark a message for translation and return it (filled in with `params`, if any).

    The message is extracted into the catalog as a msgid; it is translated where it is
    shown, by the portal (which knows the reader's language)."""
    return Text(message, params) if params else message
