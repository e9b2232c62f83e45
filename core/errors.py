"""Errors a service raises when input is wrong, in words meant for the person who typed it."""

from __future__ import annotations


class FieldErrors(ValueError):
    """One message per form field that needs fixing (`""` for the form as a whole)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


class NotFound(LookupError):
    pass
