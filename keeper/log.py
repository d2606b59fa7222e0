"""structlog set-up: JSON lines when stdout is not a terminal, readable lines on a terminal.

Key events have stable names: opportunity, skipped (with reason), liquidation_sent,
liquidation_confirmed, liquidation_failed. Loggers bind block and protocol where they apply.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_HEX64 = re.compile(r"0x[0-9a-fA-F]{64}(?![0-9a-fA-F])")
_SECRET_KEYS = {"private_key", "key", "password", "secret", "auth_key"}


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: never print anything shaped like a private key."""
    for k in list(event):
        if k in _SECRET_KEYS:
            event[k] = "***"
    return event


class _LateStream:
    """Writes to whatever sys.stdout / sys.stderr is at the time of writing (test capture,
    redirections), instead of the object that was current when logging was set up."""

    def __init__(self, name: str):
        self.name = name

    def write(self, s: str) -> int:
        return getattr(sys, self.name).write(s)

    def flush(self) -> None:
        getattr(sys, self.name).flush()

    def isatty(self) -> bool:
        return getattr(sys, self.name).isatty()


def setup(level: str = "info", json_lines: bool | None = None, stream=None) -> None:
    stream = stream or sys.stdout
    if stream is sys.stdout:
        stream = _LateStream("stdout")
    elif stream is sys.stderr:
        stream = _LateStream("stderr")
    if json_lines is None:
        json_lines = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=stream.isatty(), pad_event_to=22)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get(**bind: Any):
    return structlog.get_logger().bind(**bind)
