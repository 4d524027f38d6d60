"""GPTalk's reply stream: server-sent events whose ``data`` is ``{"content": <the whole reply so far>}``.

``ReplyText`` turns the raw network chunks of that stream into the new text of each event, and ends at
``data: [DONE]``. It is synchronous: the chat's one async loop over the response (``chat.converse``) feeds it, so each event
costs no extra coroutine hops. The rules, which the tests hold it to:

- SSE framing by the WHATWG event-stream rules: CR, LF and CRLF all end a line; a leading UTF-8 BOM is skipped;
  an event ends at a blank line; its ``data:`` lines join with ``\\n``; a line without a colon is a field with an
  empty value (so ``data`` alone adds an empty line); comments (``: keep-alive``), ``event:``, ``id:`` and
  ``retry:`` carry nothing GPTalk needs. An event with an empty ``data`` is dispatched as ``""``, as the rules say;
  it carries no content, so it adds no text. One leniency: a last event the stream ends in, without its blank
  line, still counts.
- Decoding is linear in the bytes received, however the server splits them: only the unfinished last line is kept
  between chunks.
- An event whose content extends the text emitted so far yields the extension. One that repeats that text, or a
  prefix of it, yields nothing. One that rewrites text already emitted (neither) raises ``IncompleteReplyError``:
  emitted text cannot be taken back, and a spliced reply must not pass as the server's.
- A ``data`` that is not JSON with a string ``content`` raises ``IncompleteReplyError``; so does a stream that
  ends without ``data: [DONE]``, unless its body is a JSON error envelope, whose message is the error. Text
  yielded before the error stands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from .errors import G4FError, IncompleteReplyError, envelope_data, excerpt

DONE = b"[DONE]"
BOM = b"\xef\xbb\xbf"
HEAD_BYTES = 65536
"""How much of a stream that never framed an event is kept, to read a JSON error envelope from it."""
EVENT_BYTES = 1 << 20
"""The most one event (its data, or a line not yet ended) may hold: 1 MiB. The largest legitimate event is the
whole of a long reply: gpt-3.5-turbo's 16,385-token context is about 64 KB of text, and JSON's ``\\u`` escapes at
most triple it, so a reply needs about 200 KB at the very most. Past the limit the stream is cut off, so that a
server cannot make the client hold what it sends without end."""


class EventDecoder:
    """Incremental SSE decoder: ``feed`` it chunks as they arrive, get the ``data`` of each complete event."""

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # the unfinished last line, in the pieces it came in
        self._data: list[bytes] | None = None  # the current event's data lines; None before its first
        self._cr = False  # the last chunk ended in CR: an LF that starts the next one is the same line end
        self._start: bytes | None = b""  # the first bytes, until it is known whether they begin with a BOM
        self.held = 0
        """Bytes kept between chunks: the unfinished last line and the data of the event under way."""
        self._data_bytes = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._start is not None:
            chunk = self._skip_bom(chunk)
        if self._cr and chunk:  # an empty chunk leaves the CR waiting for its LF
            self._cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:  # no line ends in it: keep it for later, without copying what is kept
            if chunk:
                self._partial.append(chunk)
                self.held += len(chunk)
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial = []
        # Blank lines end events, so the text between two is one event's lines. GPTalk's events are a single
        # "data: " line, taken whole here; any other event goes line by line.
        blocks = chunk.split(b"\n\n")
        lines = blocks.pop().split(b"\n")  # the lines after the last blank one, of an event not yet ended
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        events: list[bytes] = []
        data, size = self._data, self._data_bytes
        for block in blocks:
            if data is None and block.startswith(b"data: ") and b"\n" not in block:
                events.append(block[6:])
                continue
            data, size = _read_lines(block.split(b"\n"), data, size, events)
            if data is not None:  # the blank line after the block
                events.append(_joined(data))
                data, size = None, 0
        self._data, self._data_bytes = _read_lines(lines, data, size, events)
        self.held = len(tail) + self._data_bytes
        return events

    def close(self) -> list[bytes]:
        """The events left when the stream ends; a last event without its blank line still counts."""
        if self._start:
            self._partial.insert(0, self._start)
        rest, self._partial, self._start = b"".join(self._partial), [], None
        data, self._data = self._data, None
        events: list[bytes] = []
        if rest:
            data, _ = _read_lines(rest.split(b"\n"), data, 0, events)
        if data is not None:
            events.append(_joined(data))
        return events

    def _skip_bom(self, chunk: bytes) -> bytes:
        start = (self._start or b"") + chunk
        if len(start) < len(BOM) and BOM.startswith(start):
            self._start = start
            return b""
        self._start = None
        return start[len(BOM):] if start.startswith(BOM) else start


def _read_lines(lines: list[bytes], data: list[bytes] | None, size: int, events: list[bytes]
                ) -> tuple[list[bytes] | None, int]:
    """Read ``lines`` into ``data``, the data lines of the event under way (None before its first; ``size`` bytes):
    a blank line adds the event to ``events``. Returns the data lines of the event under way after them, and their
    size."""
    for line in lines:
        if not line:  # a blank line dispatches the event, if it had data
            if data is not None:
                events.append(_joined(data))
                data, size = None, 0
        elif line.startswith(b"data"):
            if line.startswith(b"data: "):
                value = line[6:]
            elif line.startswith(b"data:"):
                value = line[5:]
            elif line == b"data":
                value = b""
            else:
                continue  # another field whose name starts with "data"
            if data is None:
                data = [value]
            else:
                data.append(value)
            size += len(value) + 1
        # any other line is a comment or a field GPTalk does not use
    return data, size


def _joined(data: list[bytes]) -> bytes:
    return data[0] if len(data) == 1 else b"\n".join(data)


def read_after_done(chunk: bytes) -> int:
    """How much of ``chunk``, the one that completed ``data: [DONE]``, came after it (all of it if the marker began in
    the chunk before)."""
    at = chunk.rfind(DONE)
    return len(chunk) if at < 0 else len(chunk) - at - len(DONE)


class ReplyText:
    """One reply as it arrives: feed it the stream's network chunks, get back the new text of each event."""

    def __init__(self) -> None:
        self.text = ""
        self.done = False
        """True once ``data: [DONE]`` has arrived; nothing after it is read."""
        self._decoder = EventDecoder()
        self._head: bytearray | None = bytearray()  # the body's start, until an event arrives

    def deltas(self, chunk: bytes) -> Iterator[str]:
        """The new text of each event completed by ``chunk``, up to ``data: [DONE]``.

        A generator, so that the text of the events before a bad one is delivered before its error.
        """
        events = self._decoder.feed(chunk)
        head = self._head
        if head is not None:
            if events:
                self._head = None
            elif len(head) < HEAD_BYTES:
                head += chunk[: HEAD_BYTES - len(head)]
        return self._deltas_of(events, self._decoder.held > EVENT_BYTES)

    def end(self) -> Iterator[str]:
        """The stream is over: the text of an unterminated last event, then an error if ``[DONE]`` never came."""
        if self.done:
            return
        events = self._decoder.close()
        yield from self._deltas_of(events)
        if self.done:
            return
        if self._head and not events:
            self._raise_envelope_error(bytes(self._head))
        raise self.incomplete("the stream ended without 'data: [DONE]'")

    def _raise_envelope_error(self, body: bytes) -> None:
        """A stream that framed no event but is a JSON error envelope fails with the server's words."""
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            return
        try:
            envelope_data("stream", answer, body)
        except G4FError as exc:
            raise exc from None
        raise self.incomplete(f"the server sent JSON, not events: {excerpt(body)}")

    def delta(self, data: bytes) -> str:
        """The new text in one event's ``data``; an empty ``data`` carries none."""
        if not data:
            return ""
        try:
            event = json.loads(data.decode())  # as str: json.loads would sniff the encoding of bytes
        except (ValueError, RecursionError):
            event = None
        content = event.get("content") if isinstance(event, dict) else None
        if not isinstance(content, str):
            raise self.incomplete(f"an event has no string 'content': {excerpt(data)}")
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

    def _deltas_of(self, events: list[bytes], overflow: bool = False) -> Iterator[str]:
        """The new text of ``events``; then, if the event under way is ``overflow``ing its limit, the error."""
        if self.done:
            return
        for data in events:
            if data == DONE:
                self.done = True
                return
            if len(data) > EVENT_BYTES:
                overflow = True
                break
            delta = self.delta(data)
            if delta:
                yield delta
        if overflow:
            raise self.incomplete(f"an event is over the {EVENT_BYTES:,}-byte limit")
