"""Logged values cannot forge lines: control characters are escaped, numbers keep their format."""

from __future__ import annotations

import io
import logging

from reconciler.logs import EscapeControlCharacters, escape_control


def test_escape_control_writes_every_non_printable_character_as_an_escape():
    assert escape_control("payments-api") == "payments-api"
    assert escape_control("a\nb\r\tc\x1b[31m\x7f\x85\x9b\u2028\u202e\U000e0001é ü") == \
        "a\\x0ab\\x0d\\x09c\\x1b[31m\\x7f\\x85\\x9b\\u2028\\u202e\\U000e0001é ü"


def _logger_writing_to(stream: io.StringIO) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.addFilter(EscapeControlCharacters())
    logger = logging.getLogger("catalog.test-logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger


def test_the_filter_escapes_values_and_leaves_the_format_and_numbers_alone():
    stream = io.StringIO()
    logger = _logger_writing_to(stream)
    logger.warning("script %s exited with %d after %.1f s; output:\n%s", "x\nFAKE", 3, 1.25, ValueError("a\x1bb"))
    logger.warning("%(slug)s", {"slug": "s\n"})
    logger.warning("built before logging: \x1b[2J")
    assert stream.getvalue() == (
        "script x\\x0aFAKE exited with 3 after 1.2 s; output:\na\\x1bb\n"
        "s\\x0a\n"
        "built before logging: \\x1b[2J\n"
    )


def test_redact_credentials_removes_user_and_password_from_every_url_in_a_text():
    from reconciler.logs import redact_credentials

    assert redact_credentials("cannot clone https://x-access-token:ghp_abc@github.com/acme/c.git: refused") == \
        "cannot clone https://***@github.com/acme/c.git: refused"
    assert redact_credentials("'http://u:p@ss@host:8080/x' and ssh://git@host/y") == "'http://***@host:8080/x' and ssh://***@host/y"
    assert redact_credentials("http://***@host/x, user@example.com, git@github.com:acme/c.git") == \
        "http://***@host/x, user@example.com, git@github.com:acme/c.git"
    assert redact_credentials("postgresql://h/db?user=u&password=a:b@c&sslmode=require: refused") == \
        "postgresql://h/db?user=u&password=***&sslmode=require: refused"
    assert redact_credentials("postgresql://h/db?PassWord=p:w: refused") == "postgresql://h/db?PassWord=***: refused"
    assert redact_credentials(redact_credentials("postgresql://h/db?password=pw: refused")) == "postgresql://h/db?password=***: refused"


def test_the_filter_redacts_credentials_in_logged_values():
    stream = io.StringIO()
    logger = _logger_writing_to(stream)
    logger.error("job %s failed (%s)", "sync", RuntimeError("git clone https://u:TOKEN@host/c.git failed"))
    assert stream.getvalue() == "job sync failed (git clone https://***@host/c.git failed)\n"


def test_a_logged_traceback_has_its_credentials_redacted_and_escape_codes_escaped():
    stream = io.StringIO()
    logger = _logger_writing_to(stream)
    try:
        raise RuntimeError("git push https://u:TOKEN@host/c.git failed \x1b[2J")
    except RuntimeError:
        logger.exception("write-back failed")
    text = stream.getvalue()
    assert text.startswith("write-back failed\nTraceback (most recent call last):\n")
    assert "RuntimeError: git push https://***@host/c.git failed \\x1b[2J" in text and "TOKEN" not in text
