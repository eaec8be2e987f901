"""The one error type users see: a short message that names the place (file, key, column, row)."""

from __future__ import annotations


class MtlError(Exception):
    """Bad input or a run that cannot go on.

    The CLI prints ``error: <message>`` on one line and exits with code 2; library users catch it.
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)
