"""The GPTalk provider: gptalk.net's anonymous chat, through g4f.

The class holds GPTalk's settings and is what g4f registers; a chat itself is ``protocol.chat`` (the login, ask and
stream requests, run on the engine's one loop whoever calls; see ``runtime.engine``). g4f imports the module of
every provider it registers when it starts, in every program that imports it: this one imports only g4f's base
classes then, and ``protocol.chat`` (with the protocol and runtime) at the first chat.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar

from g4f.providers.base_provider import AsyncGeneratorProvider, ProviderModelMixin

if TYPE_CHECKING:
    from g4f.typing import AsyncResult, CreateResult, Messages

URL_ENV = "G4F_GPTALK_URL"
"""The setting that names the service, read at each call."""


class _ServiceURL(type(AsyncGeneratorProvider)):  # type: ignore[misc]
    """Makes ``GPTalk.url`` what a call will use: ``G4F_GPTALK_URL`` when set, else the address given to the class
    (so that g4f's provider lists and GUI show the service actually called)."""

    def configured_url(cls) -> tuple[str, str]:
        """The service address in force, as configured, and the setting it comes from: the one place that says
        which service a call talks to (``protocol.chat`` checks it)."""
        configured = os.environ.get(URL_ENV)
        return (configured, URL_ENV) if configured else (cls.default_url, "GPTalk.url")

    @property
    def url(cls) -> str:
        return cls.configured_url()[0]

    @url.setter
    def url(cls, value: str) -> None:
        cls.default_url = value


class GPTalk(AsyncGeneratorProvider, ProviderModelMixin, metaclass=_ServiceURL):
    """gptalk.net: anonymous GPT-3.5 chat. ``G4F_GPTALK_URL``, when set, replaces ``url`` at each call."""

    label = "GPTalk"
    default_url = "https://gptalk.net"
    """The service address unless ``G4F_GPTALK_URL`` is set; ``url`` gives the one in force."""
    working = True
    active_by_default = True  # on in g4f's web GUI without a visit to its settings, like g4f's no-login providers
    supports_stream = True
    supports_message_history = True
    supports_system_message = True
    default_model = "gpt-3.5-turbo"
    models: ClassVar[list[str]] = [default_model]
    timeout: ClassVar[float] = 120.0
    """Seconds for a whole call unless ``timeout=`` is given."""
    login_ahead: ClassVar[bool] = True
    """Whether a chat that takes the last ask there is starts the next login in the background, while chats keep
    coming (the one before came within a minute), so that the next chat finds a token."""
    connect_timeout: ClassVar[float] = 10.0
    """Seconds to open a connection (TCP and TLS) unless ``connect_timeout=`` is given: a host that never answers
    costs a chat this long, and g4f's fallback moves on."""

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        timeout: float | None = None,
        stream_timeout: float | None = None,
        temperature: float | None = None,
        connect_timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncResult:
        """Stream GPTalk's reply to ``messages``, one new piece of text at a time, in the caller's event loop; the
        requests run on the engine's loop.

        ``timeout`` (seconds) bounds the whole call; ``stream_timeout`` bounds the wait for each next piece of the
        stream (default: ``timeout``); ``connect_timeout`` bounds opening each connection, TLS included (default
        10). ``proxy`` is an http(s) or socks URL. ``temperature`` (0 to 2) goes to the service. Other keyword
        arguments g4f passes (``max_tokens``, ``stop``, ``top_p``, ``web_search``, ``media``, ``conversation``…) have
        no counterpart in GPTalk's protocol: they are ignored, with one ``g4f.debug`` line naming them.
        """
        from .protocol import chat

        options = dict(kwargs, proxy=proxy, timeout=timeout, stream_timeout=stream_timeout, temperature=temperature,
                       connect_timeout=connect_timeout)
        async for piece in chat.relayed(cls, model, messages, options):
            yield piece

    @classmethod
    def create_completion(cls, model: str, messages: Messages, stream: bool = True, **kwargs: Any) -> CreateResult:
        """The sync form of ``create_async_generator``, which g4f's sync API calls: each piece as it arrives, from the
        engine's loop, to be read from any thread. g4f's sync ``Client`` (which passes ``provider=``) first gets a
        ``ProviderInfo`` naming GPTalk and the model; the legacy API's streams stay text alone."""
        from .protocol import chat

        return chat.iterated(cls, model, messages, stream, kwargs)

    @classmethod
    async def get_health(cls, api_key: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Whether the service answers, as g4f's ``probe_health`` reports it: ``url``, ``ok``, ``status`` (the HTTP
        status, 0 without an answer) and, if not ok, ``error``; never raises. It costs the service one anonymous
        login, at most ``chat.HEALTH_TIMEOUT`` seconds, and the token it issues serves the next chats."""
        from .protocol import chat

        return await chat.engine().call(chat.health(cls))

    @classmethod
    def forget_tokens(cls, base_url: str | None = None) -> None:
        """Drop the tokens kept for ``base_url`` (every service's if None), in this process and in the machine's
        shared token file: the next chat logs in afresh."""
        from .protocol import token_store

        token_store.forget(base_url)
