"""Redaction: nothing that can hold a secret reaches a log line or an error line whole.

- URLs: only scheme, host and port are shown; any path, query or user info becomes `/***`
  (providers put API keys in the last path segment, in a short segment, after a trailing
  slash or in the query; it is simpler and safer to hide them all).
- Key-shaped hex: a run of 24 or more hex digits that is not exactly 40 long (an address)
  is hidden in values echoed back to the user (config errors); in log lines the keeper's
  own transaction hashes must stay readable, so there only registered secrets are removed.
- Registered secrets: the loaded signing key, relay auth key and keystore password are
  registered when loaded; any occurrence in any logged string is replaced.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

_URL = re.compile(r"(?i)\b(?:https?|wss?)://[^\s'\"<>]+")
_HEX_RUN = re.compile(r"(?i)(?:0x)?[0-9a-f]{24,}")
_SECRETS: set[str] = set()


def register_secret(secret: str) -> None:
    """Remember a secret (a key in hex, with or without 0x) so it is scrubbed from every log line."""
    s = secret.strip()
    if not s:
        return
    bare = s[2:] if s.lower().startswith("0x") else s
    if len(bare) >= 8:
        _SECRETS.add(bare.lower())


def redact_url(url: str) -> str:
    """`scheme://host:port` and `/***` if anything followed (path, query, user info)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a broken port or IPv6 literal: show nothing of it
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    if port:
        host += f":{port}"
    host = hide_key_hex(host)
    rest = parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password
    return f"{parts.scheme}://{host}{'/***' if rest else ''}"


def hide_key_hex(text: str) -> str:
    """Replace key-shaped hex runs (24+ hex digits that are not a 40-digit address) with a marker."""

    def sub(m: re.Match[str]) -> str:
        run = m.group(0)
        digits = run[2:] if run.lower().startswith("0x") else run
        if len(digits) == 40:
            return run
        return f"<{len(digits)} hex digits hidden>"

    return _HEX_RUN.sub(sub, text)


def safe_value(value: Any, limit: int = 60) -> str:
    """repr() of a user-supplied value for an error line: URLs redacted, key-shaped hex hidden, bounded."""
    text = value if isinstance(value, str) else repr(value)
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = hide_key_hex(text)
    if len(text) > limit:
        text = text[:limit] + "…"
    return repr(text) if isinstance(value, str) else text


def scrub(text: str) -> str:
    """For log lines: registered secrets removed, URLs redacted."""
    if _SECRETS:
        low = text.lower()
        for s in _SECRETS:
            if s in low:
                text = re.sub(re.escape(s), "***", text, flags=re.IGNORECASE)
                low = text.lower()
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return text
