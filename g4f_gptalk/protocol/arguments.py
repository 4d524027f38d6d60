"""What a call's arguments and settings must be: messages, model, time bounds, the service URL and the proxy.

Each check raises ``InvalidRequestError`` (a ``g4f.errors`` type and a ``ValueError``) naming the argument or
setting, before any request is sent.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from g4f.Provider.helper import format_prompt
from g4f.typing import Messages
from yarl import URL

from .errors import InvalidRequestError

SOCKS_SCHEMES = frozenset(("socks4", "socks5", "socks5h"))


def prompt_of(messages: Messages) -> str:
    """``format_prompt(messages)``, after checking that ``messages`` is a non-empty list of chat messages with some
    text. A ``None`` content is no text (assistant messages with tool calls have it), as g4f 6+ formats it; older g4f
    would send the word "None"."""
    if not isinstance(messages, (list, tuple)):
        raise InvalidRequestError(f"GPTalk: messages must be a list of chat messages, not {type(messages).__name__}")
    if not messages:
        raise InvalidRequestError("GPTalk: messages is empty; send at least one message")
    no_content = False
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise InvalidRequestError(f"GPTalk: messages[{index}] must be a dict with a 'role' string and 'content'")
        content = message["content"]
        if isinstance(content, str):
            continue
        if isinstance(content, list) and not all(isinstance(part, dict) for part in content):
            raise InvalidRequestError(f"GPTalk: messages[{index}]['content'] must be text or a list of content parts")
        if content is None:
            no_content = True
        elif not isinstance(content, list):
            raise InvalidRequestError(
                f"GPTalk: messages[{index}]['content'] must be text or a list of content parts, "
                f"not {type(content).__name__}")
    if no_content:
        messages = [{**message, "content": ""} if message["content"] is None else message for message in messages]
    prompt = format_prompt(list(messages))
    if not isinstance(prompt, str) or not prompt.strip():  # g4f 0.2.x passes a lone message's None content on
        raise InvalidRequestError("GPTalk: the messages have no text to send")
    return prompt


def model_of(model: Any, default: str) -> str:
    """``model`` as a string for the provider's ``get_model``: empty for none or ``"auto"`` (the default)."""
    if model is None or model == "auto":
        return ""
    if not isinstance(model, str):
        raise InvalidRequestError(f"GPTalk: model must be a string such as {default!r}, not {type(model).__name__}")
    return model


def seconds(name: str, value: Any, default: float) -> float:
    """A time bound in seconds: ``default`` for None, else a finite number above 0."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidRequestError(f"GPTalk: {name}={value!r} is not a number of seconds above 0")
    return float(value)


TEMPERATURE_RANGE = (0.0, 2.0)
"""The sampling temperatures the service accepts (those of the OpenAI models behind it)."""


def temperature_of(value: Any) -> float | int:
    """``temperature=``: 0 (what gptalk.net's web client sends) for None, else a number within ``TEMPERATURE_RANGE``."""
    if value is None:
        return 0
    low, high = TEMPERATURE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequestError(f"GPTalk: temperature={value!r} is not a number from {low:g} to {high:g}")
    return value


def unused(options: dict[str, Any]) -> list[str]:
    """The names of the keyword arguments in ``options`` that GPTalk has no use for and that ask for something
    (g4f front-ends pass many, most of them None or empty)."""
    return sorted(name for name, value in options.items()
                  if name not in G4F_PLUMBING and value is not None and value is not False and value != [] and value != {})


G4F_PLUMBING = frozenset(("ignore_stream", "ignore_working", "stream", "raw", "api_key", "base_url", "action",
                          "download_media", "return_conversation", "provider"))
"""Arguments g4f passes for its own bookkeeping rather than as a request to the service."""


@functools.lru_cache(maxsize=16)
def checked_url(raw: str, setting: str) -> str:
    """``raw`` as a service address without a trailing slash; ``setting`` names it if it is not an http(s) URL."""
    try:
        url = URL(raw)
    except (TypeError, ValueError):
        url = None
    if (url is None or url.explicit_port == 0) and (port := _port_out_of_range(raw)):
        raise InvalidRequestError(f"GPTalk: {setting}={raw!r} has port {port}, out of range 1-65535")
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError(f"GPTalk: {setting}={raw!r} is not an http(s) URL such as https://gptalk.net")
    return str(url).rstrip("/")


def _port_out_of_range(raw: str) -> str | None:
    """The port of ``raw`` if it is a number out of range (yarl refuses the whole URL for it)."""
    try:
        netloc = raw.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    except IndexError:
        return None
    port = netloc.rsplit(":", 1)[1] if ":" in netloc and not netloc.endswith("]") else ""
    return port if port.isascii() and port.isdigit() and not 0 < int(port) < 65536 else None


@functools.lru_cache(maxsize=16)
def origin_of(url: str) -> str:
    """The origin of a service address, for the ``Origin`` header: scheme, host and port, without any path (RFC
    6454); ``Referer`` keeps the path."""
    return str(URL(url).origin())


def split_proxy(proxy: str | None) -> tuple[str | None, str | None]:
    """``proxy`` as (http proxy for each request, socks proxy for the connector); checks it is a proxy URL."""
    if not proxy:
        return None, None
    try:
        url = URL(proxy)
    except (TypeError, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https", *SOCKS_SCHEMES) or not url.host:
        shown = f" (scheme {url.scheme!r}, host {url.host!r})" if url is not None and url.absolute else ""
        raise InvalidRequestError(f"GPTalk: the proxy setting{shown} is not an http(s):// or socks5:// URL with a host")
    return (None, proxy) if url.scheme in SOCKS_SCHEMES else (proxy, None)


def proxy_address(proxy: str) -> str:
    """``host:port`` of a proxy URL (checked by ``split_proxy``), without its credentials."""
    url = URL(proxy)
    return f"{url.host}:{url.port}"


def proxy_credentials(proxy: str) -> tuple[str | None, str | None]:
    """The user and password in ``proxy`` (None where it has none), to keep out of errors and logs."""
    try:
        url = URL(proxy)
    except (TypeError, ValueError):
        return None, None
    return url.user, url.password
