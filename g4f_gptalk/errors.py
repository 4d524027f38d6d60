"""GPTalk failures as g4f's own error types, so g4f's retry and fallback logic treats GPTalk like a built-in.

Every message names the service, the step (``login``, ``ask`` or ``stream``) and what the server said.
Like aiohttp's errors, the classes defined here also subclass the matching builtin where one exists.
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from g4f.errors import G4FError, MissingAuthError, RateLimitError, ResponseError
from g4f.errors import TimeoutError as G4FTimeoutError

EXCERPT_CHARS = 200

# Envelope codes that mean "this token is no good": the provider drops the token and logs in again once.
AUTH_FAILURE_CODES = frozenset((401, 403, 10401, 10403))


class InvalidRequestError(G4FError, ValueError):
    """A setting or argument is unusable (service URL, proxy, messages); raised before any request is sent."""


class IncompleteReplyError(ResponseError):
    """The stream ended, broke or went wrong before ``data: [DONE]``; the text before it was already yielded."""


class GPTalkTimeoutError(G4FTimeoutError, builtins.TimeoutError):
    """The call ran past ``timeout=``, or the stream stalled for longer than the stall bound."""


class TokenRejectedError(MissingAuthError):
    """The service refused the token (HTTP 401/403 or an auth-failure code); a fresh login may fix it."""


def excerpt(body: bytes | str) -> str:
    """A short one-line quote of a response body for an error message."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def for_status(step: str, status: int, body: bytes) -> G4FError:
    """The error for a non-2xx answer to ``step``."""
    message = f"GPTalk {step}: HTTP {status}: {excerpt(body)}"
    if status == 429:
        return RateLimitError(message)
    if status in (401, 403):
        return TokenRejectedError(message)
    return ResponseError(message)


def envelope_data(step: str, payload: Any, body: bytes) -> dict[str, Any]:
    """Checks a GPTalk JSON envelope (``{"code", "msg", "data"}``) and returns its ``data`` object."""
    if not isinstance(payload, dict):
        raise ResponseError(f"GPTalk {step}: expected a JSON object, got: {excerpt(body)}")
    code = payload.get("code", 0)
    if code not in (0, 200, None):
        message = f"GPTalk {step}: service error {code}: {payload.get('msg') or excerpt(body)}"
        if code in AUTH_FAILURE_CODES:
            raise TokenRejectedError(message)
        raise ResponseError(message)
    data = payload.get("data")
    if not isinstance(data, dict):
        raise ResponseError(f"GPTalk {step}: the answer has no 'data' object: {excerpt(body)}")
    return data


def token_of(step: str, data: dict[str, Any]) -> str:
    """``data.token`` of a login or ask answer, which must be a non-empty string."""
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise ResponseError(f"GPTalk {step}: the answer has no 'data.token': 'data' is {excerpt(json.dumps(data))}")
    return token
