"""What reaches the logs: no bearer tokens, no lines forged by peers.

``websockets`` logs every request line and header at DEBUG, so a token sent
as ``Authorization: Bearer …`` or as ``?token=…`` in the URL would end up in
a log file. Its records for our connections go through loggers that carry
:class:`RedactTokens`.

Text a peer chose (its peer id, an error message it sent, an unknown message
type) goes through :func:`~autosync_jupyter.wording.printable` before it is
logged, so a newline in it cannot start a forged log line.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactTokens", "redact_url", "websocket_logger"]

_TOKEN_PARAM = re.compile(r"([?&](?:access_)?token=)[^&#\s]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Replace the value of ``token=`` query parameters with ``[redacted]``.

    >>> redact_url("/sync?room=1&token=eyJhbGciOi.x.y")
    '/sync?room=1&token=[redacted]'
    """
    return _TOKEN_PARAM.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Hide Authorization header values and ``token=`` URL parameters."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            if len(args) == 2 and isinstance(args[0], str) and args[0].lower() == "authorization":
                record.args = (args[0], "[redacted]")
            else:
                record.args = tuple(redact_url(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = redact_url(record.msg)
        return True


def websocket_logger(name: str) -> logging.Logger:
    """A logger for ``websockets``' records whose tokens are redacted."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
    return logger
