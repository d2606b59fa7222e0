"""structlog set-up: JSON lines when stdout is not a terminal, readable lines on a terminal.

Key events have stable names: opportunity, skipped (with reason), liquidation_sent,
liquidation_confirmed, liquidation_failed. Loggers bind block and protocol where they apply.

Every line goes through `_redact` last: key-named fields (`private_key`, `key`, `password`,
`secret`, `auth_key`, and any field whose name contains "private_key", "password" or
"secret", at any depth) become "***", and every value, whatever its field name, is passed
through `keeper.redact.scrub` (registered secrets removed, URLs cut to scheme://host:port).
An `exc_info=True` line carries the formatted traceback, scrubbed the same way, in an
`exception` field (JSON) or under the line (console).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from . import redact

LEVELS = ("debug", "info", "warning", "error", "critical")
_SECRET_KEYS = frozenset({"private_key", "key", "password", "secret", "auth_key"})
_SECRET_PARTS = ("private_key", "password", "secret")
_PLAIN = (int, float, bool, type(None))


def _secret_name(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    low = name.lower()
    return low in _SECRET_KEYS or any(p in low for p in _SECRET_PARTS)


def _clean(value: Any) -> Any:
    """scrub() every string in value; hide key-named fields of nested dicts. Cheap for the
    common cases: numbers pass untouched, a string costs one `in` test when no secret is
    registered and it holds no "://"."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        return redact.scrub(value)
    if isinstance(value, dict):
        return {k: ("***" if _secret_name(k) else _clean(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clean(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return [_clean(v) for v in value]
    if isinstance(value, BaseException):
        return redact.scrub(f"{value.__class__.__name__}: {value}")
    if isinstance(value, (bytes, bytearray)):
        return value
    # anything else is rendered with str()/repr() by the renderer: check what it would show
    try:
        text = str(value)
    except Exception:
        return "<unprintable>"
    cleaned = redact.scrub(text)
    return value if cleaned == text else cleaned


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: no secret and no URL with its API key reaches a log line."""
    return _clean(event)


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


def level_number(level: str) -> int:
    """logging's number for one of LEVELS (case-insensitive); ValueError for anything else."""
    name = str(level).strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    return getattr(logging, name.upper())


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
            # exc_info=True -> "exception": the formatted traceback (a string, so _redact scrubs it)
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get(**bind: Any):
    return structlog.get_logger().bind(**bind)
