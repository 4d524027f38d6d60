"""The ``gptalk_server`` fixture: installing g4f-gptalk gives every pytest suite a local GPTalk server, the way
pytest-aiohttp gives ``aiohttp_server`` (registered through the ``pytest11`` entry point)::

    import g4f
    from g4f_gptalk.testing.server import echo_reply

    def test_my_app_gets_a_reply(gptalk_server):
        reply = g4f.ChatCompletion.create(model="gpt-3.5-turbo", provider="GPTalk",
                                          messages=[{"role": "user", "content": "Hello"}])
        assert reply == echo_reply("Hello")
        assert gptalk_server.stats["logins"] == 1 and gptalk_server.stats["asks"] == 1
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .server import GPTalkServer


@pytest.fixture
def gptalk_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GPTalkServer]:
    """A local GPTalk server on 127.0.0.1 for this test, with GPTalk pointed at it.

    ``G4F_GPTALK_URL`` names the server during the test and is restored afterwards; no token from another test is
    used. The server's ``url``, its ``stats`` (``logins``, ``asks``, ``streams``, ``connections``, ``rejected``…),
    its ``faults`` (``gptalk_server.faults = Faults(stream=["cut"])``) and ``prompts`` are the test's to use.
    """
    from ..provider import URL_ENV, GPTalk
    from .server import ServerThread

    thread = ServerThread()
    server = thread.__enter__()
    try:
        monkeypatch.setenv(URL_ENV, server.url)
        GPTalk.forget_tokens(server.url)  # a server before this one may have had the same port
        yield server
    finally:
        GPTalk.forget_tokens(server.url)
        thread.__exit__(None, None, None)
