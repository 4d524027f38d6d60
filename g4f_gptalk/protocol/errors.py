"""GPTalk failures as g4f's own error types, so g4f's retry and fallback logic treats GPTalk like a built-in.

Every message names the service, the step (``login``, ``ask`` or ``stream``) and what the server said.
Like aiohttp's errors, the classes defined here also subclass the matching builtin where one exists.
"""

from __future__ import annotations

import builtins
import datetime
import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

from g4f.errors import MissingAuthError, RateLimitError, ResponseError
from g4f.requests.raise_for_status import is_cloudflare

from ..compat import CloudflareError, G4FError, G4FTimeoutError
from ..redaction import remember, remember_quoted

__all__ = ["CloudflareError", "G4FError", "GPTalkTimeoutError", "IncompleteReplyError", "InvalidRequestError",
           "TokenRejectedError"]

EXCERPT_CHARS = 200

# Envelope codes that mean "this token is no good": the provider drops the token and logs in again once. 401 and
# 403 mirror the HTTP statuses; 10401 and 10403 are the same in GPTalk's five-digit service codes, which its web
# client answered by logging in again.
AUTH_FAILURE_CODES = frozenset((401, 403, 10401, 10403))


class InvalidRequestError(ValueError, G4FError):
    """A setting or argument is unusable (service URL, proxy, messages); raised before any request is sent."""


class IncompleteReplyError(ResponseError):
    """The stream ended, broke or went wrong before ``data: [DONE]``; the text before it was already yielded."""


class GPTalkTimeoutError(builtins.TimeoutError, G4FTimeoutError):
    """The call ran past ``timeout=``, or the stream stalled for longer than the stall bound."""


class TokenRejectedError(MissingAuthError):
    """The service refused the token (HTTP 401/403 or an auth-failure code); a fresh login may fix it."""


def excerpt(body: bytes | str) -> str:
    """A short one-line quote of a response body for an error message."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def shown(value: Any) -> str:
    """``value`` from a JSON answer, quoted for an error message (even when nested too deep to print)."""
    try:
        return excerpt(json.dumps(value, ensure_ascii=False))
    except (RecursionError, ValueError, TypeError):
        return "(a value nested too deep to show)"


def answer_data(step: str, status: int, headers: Mapping[str, str], body: bytes, url: str = "") -> dict[str, Any]:
    """The ``data`` object of a JSON answer to ``step`` from the service at ``url``, or the error the answer
    amounts to, its ``status`` attribute the answer's HTTP status."""
    try:
        return _answer_data(step, status, headers, body, url)
    except G4FError as error:
        error.status = status
        raise


def _answer_data(step: str, status: int, headers: Mapping[str, str], body: bytes, url: str) -> dict[str, Any]:
    if not 200 <= status < 300:
        _remember_quoted(body)  # what an error answer quotes may be a token never learnt otherwise
    if body[:1] == b"<" and is_cloudflare(body.decode("utf-8", "replace")):
        # a challenge in front of the service, whatever its status: not a rejected token, not GPTalk's words
        raise CloudflareError(f"GPTalk {step}: HTTP {status}: a Cloudflare challenge page, not the service's answer")
    if status == 404 and url and body[:1] != b"{":  # not the service's own JSON: the path itself is unknown
        raise ResponseError(f"GPTalk {step}: HTTP 404: {excerpt(body)} (no GPTalk API at {url}: is it the service's "
                            f"root, such as https://gptalk.net?)")
    if not 200 <= status < 300:
        raise for_status(step, status, body, headers)
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        raise ResponseError(f"GPTalk {step}: expected JSON, got: {excerpt(body)}") from None
    return envelope_data(step, answer, body)


def for_status(step: str, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> G4FError:
    """The error for a non-2xx answer to ``step``."""
    message = f"GPTalk {step}: HTTP {status}: {excerpt(body)}"
    if status == 429:
        wait = retry_after(headers or {})
        return RateLimitError(message if wait is None else f"{message} (the service asks to wait {wait:g} s)")
    if status in (401, 403):
        return TokenRejectedError(message)
    return ResponseError(message)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The seconds a ``Retry-After`` header asks for (a number of seconds or an HTTP date), if it is readable."""
    value = headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():  # HTTP's delta-seconds; str.isdigit alone also takes "¹" or "٣"
        return float(value)
    when = http_date(value)
    return None if when is None else max(0.0, round(when - time.time()))


def http_date(value: str) -> float | None:
    """An HTTP date (``Date``, ``Retry-After``) in Unix seconds, if it is readable: IMF-fixdate, RFC 850 or asctime
    form, all UTC (RFC 9110 §5.6.7), whatever this machine's time zone."""
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # asctime's form names no zone: UTC, not this machine's local time
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _remember_quoted(body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    try:
        remember_quoted(json.loads(text))
    except (ValueError, RecursionError):
        pass
    remember_quoted(text)


def envelope_data(step: str, payload: Any, body: bytes) -> dict[str, Any]:
    """Checks a GPTalk JSON envelope (``{"code", "msg", "data"}``) and returns its ``data`` object."""
    if not isinstance(payload, dict):
        raise ResponseError(f"GPTalk {step}: expected a JSON object, got: {excerpt(body)}")
    code = payload.get("code", 0)
    if code not in (0, 200, None):
        remember_quoted(payload)
        said = payload.get("msg")
        message = f"GPTalk {step}: service error {shown(code)}: {said if isinstance(said, str) and said else excerpt(body)}"
        if isinstance(code, int) and code in AUTH_FAILURE_CODES:
            raise TokenRejectedError(message)
        raise ResponseError(message)
    data = payload.get("data")
    if not isinstance(data, dict):
        raise ResponseError(f"GPTalk {step}: the answer has no 'data' object: {excerpt(body)}")
    return data


def token_of(step: str, data: dict[str, Any]) -> str:
    """``data.token`` of a login or ask answer: a non-empty printable string (it goes into a header or a URL)."""
    token = data.get("token")
    if isinstance(token, str):
        remember(token)  # a secret from the moment it arrives, usable or not
    if not isinstance(token, str) or not token:
        raise ResponseError(f"GPTalk {step}: the answer has no 'data.token': 'data' is {shown(data)}")
    if not token.isprintable() or token != token.strip():
        # the value itself stays out of the message: it is a secret, however broken
        raise ResponseError(f"GPTalk {step}: the answer's 'data.token' has control characters or surrounding spaces")
    return token
