"""Log lines nobody can forge and that leak no credential.

A path, header, slug or git message may carry a newline (`%0A` in a URL), an ESC that recolours or
clears the terminal, or a bidi override. Written raw, it starts a fake log line. Every value that goes
into a line is escaped (`\\x0a`, `\\x1b`, `\\u202e`): `escape_control` for lines written by hand (the
access log), the `EscapeControlCharacters` filter for everything logged through `logging`.

The same filter removes the user and password of any URL in a value, and any `password=` setting (a
libpq URL's `?password=`), with `redact_credentials`: `CATALOG_REPO=https://user:TOKEN@host/...` must
never reach a log, whichever error quotes it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping

# The user:password@ of a URL: everything from :// to the authority's last @ (a password may hold an @).
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s'\"@]*(?:@[^/\s'\"@]*)*@")
# A password given as a setting: a libpq URL's `?password=` (any case: a misspelt one is quoted by errors).
# Its value ends where the URL does; a colon before a space ends it too (`URL: error`), so a text redacted
# twice keeps its colon.
_PASSWORD_SETTING = re.compile(r"(?i)\b(password=)(?:[^&#\s'\":]|:(?=\S))+")


def redact_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it, and every `password=` value, replaced by ***."""
    if "@" in text:
        text = _URL_CREDENTIALS.sub("***@", text)
    if "=" in text:
        text = _PASSWORD_SETTING.sub(r"\1***", text)
    return text


def escape_control(text: str) -> str:
    """`text` with every non-printable character (C0 and C1 controls, DEL, line and bidi marks) escaped."""
    if text.isprintable():  # the common case, one pass in C
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class EscapeControlCharacters(logging.Filter):
    """Escapes a record's values (its args; its message when it has none), never the format's own text,
    and redacts URL credentials in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):
            record.args = {key: _safe(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_safe(value) for value in record.args)
        elif isinstance(record.msg, str):
            record.msg = _safe(record.msg)  # a message built before logging holds its values
        if record.exc_info and not record.exc_text:  # a traceback keeps its lines; they get the same care
            lines = logging.Formatter().formatException(record.exc_info).split("\n")
            record.exc_text = "\n".join(escape_control(redact_credentials(line)) for line in lines)
        return True


def _safe(value: object) -> object:
    if isinstance(value, (int, float)):  # numbers keep their %d / %.1f formatting
        return value
    return escape_control(redact_credentials(str(value)))


def log_to_stderr(line_format: str) -> None:
    """INFO and above to stderr with escaped values (a no-op when logging is already configured)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(EscapeControlCharacters())
    logging.basicConfig(level=logging.INFO, format=line_format, handlers=[handler])
