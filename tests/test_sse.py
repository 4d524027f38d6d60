"""The stream parser, on literal SSE bytes and on every way the network may split them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from g4f_gptalk.errors import IncompleteReplyError
from g4f_gptalk.sse import ReplyText

NOISE = [b": keep-alive\n", b"event: message\n", b"id: 42\n", b"retry: 3000\n", b":\n", b"event: ping\r\n"]


def deltas_of(chunks: list[bytes], received: list[str] | None = None) -> list[str]:
    """Feeds ``chunks`` to a ``ReplyText`` as the provider does; the deltas also go to ``received`` as they come."""
    received = [] if received is None else received
    reply = ReplyText()
    for chunk in chunks:
        received.extend(reply.deltas(chunk))
        if reply.done:
            break
    received.extend(reply.end())
    return received


def event(content: str, newline: bytes = b"\n") -> bytes:
    return b"data: " + json.dumps({"content": content}, ensure_ascii=False).encode() + newline + newline


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[start:end] for start, end in zip([0, *points], [*points, len(data)], strict=True)]


def test_literal_gptalk_stream():
    stream = [b'data: {"content": "Hel"}\n\n', b'data: {"content": "Hello"}\n\n', b"data: [DONE]"]
    assert deltas_of(stream) == ["Hel", "lo"]


def test_repeated_or_stale_content_yields_nothing_new():
    stream = [event("Hi"), event("Hi"), event("H"), event("Hi there"), b"data: [DONE]\n\n"]
    assert deltas_of(stream) == ["Hi", " there"]


def test_events_after_done_are_ignored():
    assert deltas_of([event("a"), b"data: [DONE]\n\n", event("ab")]) == ["a"]


def test_multi_line_data_is_joined_with_newline_as_sse_says():
    assert deltas_of([b'data: {"content":\ndata: "x"}\n\n', b"data: [DONE]\n\n"]) == ["x"]


def test_events_with_empty_data_are_not_dispatched_as_in_browsers():
    assert deltas_of([b"data:\n\n", event("a"), b"data: \r\n\r\n", b"event: ping\n\n", b"data: [DONE]\n\n"]) == ["a"]


def test_data_without_the_space_or_with_whitespace_around_the_json_is_read():
    stream = [b'data:{"content": "a"}\n\n', b'data:  {"content": "ab"} \t\n\n', b"data: [DONE]\n\n"]
    assert deltas_of(stream) == ["a", "b"]


@pytest.mark.parametrize("data", [b'{"content": "a"} x', b'{"content": "\xff"}', b'["content"]', b'{"content": null}'])
def test_data_that_is_not_json_with_a_string_content_is_an_error(data):
    with pytest.raises(IncompleteReplyError, match="an event has no string 'content'"):
        deltas_of([b"data: " + data + b"\n\n"])


def test_rewritten_text_is_an_error_after_the_text_already_given():
    reply = ReplyText()
    assert reply.delta(event("colour")[6:-2]) == "colour"
    with pytest.raises(IncompleteReplyError, match="rewrote text it had already sent; the reply is incomplete after 6"):
        reply.delta(event("color!")[6:-2])


def test_a_bad_event_is_an_error_after_the_text_before_it_in_the_same_chunk():
    received: list[str] = []
    with pytest.raises(IncompleteReplyError) as error:
        deltas_of([event("He") + b"data: {not json\n\n" + event("Hello")], received)
    assert "no string 'content': {not json; the reply is incomplete after 2 characters" in str(error.value)
    assert received == ["He"]


pieces = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(
    pieces=pieces,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    noise=st.lists(st.sampled_from(NOISE), max_size=40),
    crlf=st.booleans(),
    seed=st.randoms(use_true_random=False),
)
def test_any_split_with_any_noise_yields_exactly_the_final_content(pieces, cuts, noise, crlf, seed):
    newline = b"\r\n" if crlf else b"\n"
    frames = [event("".join(pieces[: index + 1]), newline) for index in range(len(pieces))]
    for line in noise:
        frames.insert(seed.randrange(len(frames) + 1), line.replace(b"\n", newline) + newline)
    wire = b"".join(frames) + b"data: [DONE]" + newline + newline
    deltas = deltas_of(split(wire, cuts))
    assert "".join(deltas) == "".join(pieces)
    assert all(deltas)


@settings(max_examples=100, deadline=None)
@given(pieces=pieces, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_without_done_the_text_arrives_and_then_the_error(pieces, cuts):
    wire = b"".join(event("".join(pieces[: index + 1])) for index in range(len(pieces)))
    received: list[str] = []
    with pytest.raises(IncompleteReplyError, match="without 'data: \\[DONE\\]'"):
        deltas_of(split(wire, cuts), received)
    assert "".join(received) == "".join(pieces)
