"""What must never be shown, and the one place that hides it.

Every secret the process handles is remembered here: fingerprints sent, tokens and stream tokens received (also
ones seen only in an error's body), proxy passwords in plain and in their ``user:pass`` base64 form. Every error
that leaves the package passes ``scrub_error`` at the engine's exit, and every debug line ``scrub``: a server that
echoes a secret back, in any step and for any chat, has it replaced by ``[redacted]``. A base module, below every
layer, like ``compat``.
"""

from __future__ import annotations

import base64
import re
from typing import Any

REDACTED = "[redacted]"
KEPT = 4096
"""How many secrets are remembered, newest first: a login's token and fingerprint and a stream token per chat for
the last thousand chats or so, long after any of them could still be echoed."""

_secrets: dict[str, None] = {}
"""The secrets, in the order they were learnt (a dict: ordered, and a set for lookups)."""
_BEARER = re.compile(r"Bearer\s+([^\s\"',;}]+)")


SHORTEST = 4
"""Values a server sends that are shorter than this are not taken for secrets: a token that short protects nothing,
and hiding it would hide every word it occurs in."""


def remember(*values: str | None, shortest: int = SHORTEST) -> None:
    """Add ``values`` (None ones and those shorter than ``shortest`` are skipped) to what is never shown."""
    for value in values:
        if value and len(value) >= shortest and value not in _secrets:
            _secrets[value] = None
            if len(_secrets) > KEPT:
                del _secrets[next(iter(_secrets))]


def remember_credentials(user: str | None, password: str | None) -> None:
    """A proxy's credentials: the password, and the ``Proxy-Authorization`` value that carries it (base64 of
    ``user:password``), which a proxy may echo back."""
    if password:
        encoded = base64.b64encode(f"{user or ''}:{password}".encode("latin-1", "replace")).decode()
        remember(password, encoded, shortest=1)


def remember_quoted(value: Any) -> None:
    """Secrets in an answer the service sent with an error: the string values of its ``token`` and ``fingerprint``
    keys, at any depth, and what follows ``Bearer`` in its text."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and isinstance(key, str) and ("token" in key.lower() or "fingerprint" in key.lower()):
                remember(item)
            else:
                remember_quoted(item)
    elif isinstance(value, list):
        for item in value:
            remember_quoted(item)
    elif isinstance(value, str):
        remember(*_BEARER.findall(value))


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``[redacted]``, the longest first (one may hold another)."""
    found = [secret for secret in _secrets if secret in text]
    for secret in sorted(found, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _shows_a_secret(error: BaseException) -> bool:
    try:
        shown = f"{error}\n{error!r}\n" + "\n".join(map(str, getattr(error, "__notes__", ())))
    except Exception:  # noqa: BLE001 - an error that cannot be shown shows nothing
        return False
    return any(secret in shown for secret in _secrets)


def scrub_error(error: BaseException) -> BaseException:
    """``error``, its message and arguments scrubbed in place, and every exception in its ``__cause__`` and
    ``__context__`` chain that would show a secret replaced by a ``ScrubbedError`` that says the same without it:
    the traceback a user logs (``logger.exception``, ``traceback.format_exception``) shows no secret."""
    if not _secrets:
        return error
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in current.args)
        if hasattr(current, "__notes__"):
            current.__notes__ = [scrub(note) if isinstance(note, str) else note for note in current.__notes__]
        for link in ("__cause__", "__context__"):
            linked = getattr(current, link)
            if linked is not None and id(linked) not in seen and _shows_a_secret(linked):
                setattr(current, link, ScrubbedError.of(linked))
        current = current.__cause__ or current.__context__
    return error


class ScrubbedError(Exception):
    """Stands in, in a chain of causes, for an error whose words held a secret: its type's name and its words,
    scrubbed, its traceback and its own causes kept."""

    @classmethod
    def of(cls, error: BaseException) -> ScrubbedError:
        try:
            words = str(error)
        except Exception:  # noqa: BLE001
            words = "(unprintable)"
        stand_in = cls(f"{type(error).__module__}.{type(error).__qualname__}: {scrub(words)}")
        stand_in.__cause__, stand_in.__context__ = error.__cause__, error.__context__
        stand_in.__suppress_context__ = error.__suppress_context__
        return stand_in.with_traceback(error.__traceback__)


def forget_all() -> None:
    """Forget every secret (for tests; the process's own never need forgetting)."""
    _secrets.clear()
