"""GPTalk's reply stream: server-sent events whose ``data`` is ``{"content": <the whole reply so far>}``.

``stream_deltas`` turns the raw network chunks of that stream into the new text of each event, and ends at
``data: [DONE]``. The rules, which the tests hold it to:

- SSE framing as browsers read it: ``\\n`` or ``\\r\\n`` line ends, an event ends at a blank line, several
  ``data:`` lines of one event join with ``\\n``; comments (``: keep-alive``), ``event:``, ``id:`` and ``retry:``
  lines are accepted and carry nothing GPTalk needs.
- An event whose content extends the text emitted so far yields the extension. One that repeats that text, or a
  prefix of it, yields nothing. One that rewrites text already emitted (neither) raises ``IncompleteReplyError``:
  emitted text cannot be taken back, and a spliced reply must not pass as the server's.
- A ``data`` that is not JSON with a string ``content`` raises ``IncompleteReplyError``; so does a stream that
  ends without ``data: [DONE]``. Text yielded before the error stands.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator

from .errors import IncompleteReplyError, excerpt

DONE = b"[DONE]"


class EventDecoder:
    """Incremental SSE decoder: ``feed`` it chunks as they arrive, get the ``data`` of each complete event."""

    def __init__(self) -> None:
        self._partial_line: list[bytes] = []
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self._partial_line.append(chunk)
            return []
        lines = chunk.split(b"\n")
        if self._partial_line:
            self._partial_line.append(lines[0])
            lines[0] = b"".join(self._partial_line)
        last = lines.pop()
        self._partial_line = [last] if last else []
        return self._take_lines(lines)

    def close(self) -> list[bytes]:
        """The events left when the stream ends; an unterminated last event still counts."""
        lines, self._partial_line = [b"".join(self._partial_line), b""], []
        return self._take_lines(lines)

    def _take_lines(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        return events


class ReplyText:
    """The reply emitted so far; turns each event's cumulative ``content`` into the delta to emit."""

    def __init__(self) -> None:
        self.text = ""

    def delta(self, data: bytes) -> str:
        """The new text in one event's ``data``."""
        content = self._content_of(data)
        text = self.text
        if content.startswith(text):
            self.text = content
            return content[len(text):]
        if text.startswith(content):
            return ""
        raise self.incomplete("the server rewrote text it had already sent")

    def incomplete(self, problem: str) -> IncompleteReplyError:
        return IncompleteReplyError(
            f"GPTalk stream: {problem}; the reply is incomplete after {len(self.text)} characters"
        )

    def _content_of(self, data: bytes) -> str:
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        content = event.get("content") if isinstance(event, dict) else None
        if not isinstance(content, str):
            raise self.incomplete(f"an event has no string 'content': {excerpt(data)}")
        return content


async def stream_deltas(chunks: AsyncIterable[bytes], reply: ReplyText | None = None) -> AsyncIterator[str]:
    """The new text of each event in ``chunks``, up to ``data: [DONE]``; ``reply`` collects the whole text."""
    reply = reply if reply is not None else ReplyText()
    decoder = EventDecoder()
    chunk_iterator = aiter(chunks)
    while True:
        chunk = await anext(chunk_iterator, None)
        for data in decoder.feed(chunk) if chunk is not None else decoder.close():
            if data == DONE:
                return
            delta = reply.delta(data)
            if delta:
                yield delta
        if chunk is None:
            raise reply.incomplete("the stream ended without 'data: [DONE]'")
