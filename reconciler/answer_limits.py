"""What one answer, and one bulk PATCH of answers, may hold, defined once: the API enforces these and
`catalog answer` keeps within them (DESIGN.md section 9)."""

from __future__ import annotations

MAX_MESSAGE_BYTES = 64 * 1024  # a result's message, in UTF-8
MAX_URL_LENGTH = 2048
MAX_BULK_ANSWERS = 1000  # answers in one PATCH /api/results
MAX_BULK_BODY_BYTES = 8 * 1024 * 1024  # the body of one PATCH /api/results: 1,000 answers of a few KiB each
