"""Marking user-facing messages for translation."""

from __future__ import annotations


def N_(message: str) -> str:  # noqa: N802
    """Mark a message for translation and return it unchanged.

    The message is extracted into the catalog as a msgid; it is translated where it is
    shown, by the portal (which knows the reader's language)."""
    return message
