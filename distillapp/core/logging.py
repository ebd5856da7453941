"""Logging filters."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied


class ForbiddenOneLine(logging.Filter):
    """Django logs every PermissionDenied with its traceback; a 403 is an expected answer, so keep
    the one line ("Forbidden (Permission denied): /path: reason") and drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PermissionDenied):
            record.exc_info = None
            record.exc_text = None
            reason = str(exc)
            if reason:
                record.msg = f"{record.msg}: %s"
                record.args = (*(record.args or ()), reason)  # type: ignore[misc]
        return True
