"""The stream parser, on literal SSE bytes and on every way the network may split them."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from g4f_gptalk.protocol.errors import IncompleteReplyError
from g4f_gptalk.protocol.sse import EVENT_BYTES, EventDecoder, ReplyText

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


def test_an_empty_data_is_dispatched_as_empty_and_adds_no_text():
    assert deltas_of([b"data:\n\n", event("a"), b"data: \r\n\r\n", b"event: ping\n\n", b"data: [DONE]\n\n"]) == ["a"]


# The WHATWG event-stream rules, as the web-platform-tests' eventsource format tests check them.
WHATWG_CASES = {
    "LF": (b"data: a\ndata: b\n\n", [b"a\nb"]),
    "CRLF": (b"data: a\r\ndata: b\r\n\r\n", [b"a\nb"]),
    "bare CR": (b"data: a\rdata: b\r\r", [b"a\nb"]),
    "mixed line ends": (b"data: a\rdata: b\ndata: c\r\n\r\ndata: d\r\r", [b"a\nb\nc", b"d"]),
    "leading BOM": (b"\xef\xbb\xbfdata: a\n\n", [b"a"]),
    "a second BOM is part of a field name": (b"\xef\xbb\xbfdata: a\n\n\xef\xbb\xbfdata: b\n\n", [b"a"]),
    "empty data": (b"data:\n\n", [b""]),
    "data without a colon": (b"data\n\n", [b""]),
    "two data lines without a colon": (b"data\ndata\n\n", [b"\n"]),
    "other fields without a colon": (b"event\nid\ndata: a\n\n", [b"a"]),
    "comments": (b": hi\n:\ndata: a\n: between\ndata: b\n\n", [b"a\nb"]),
    "only one space is dropped": (b"data:  a \n\n", [b" a "]),
    "no data, no event": (b"event: x\nid: 1\n\n\n", []),
    "a field whose name starts with data": (b"datum: x\ndata-x: y\ndata: a\n\n", [b"a"]),
}


@pytest.mark.parametrize("case", WHATWG_CASES)
@pytest.mark.parametrize("split_into", ["one chunk", "single bytes"])
def test_the_decoder_follows_the_whatwg_event_stream_rules(case, split_into):
    wire, expected = WHATWG_CASES[case]
    decoder = EventDecoder()
    chunks = [wire] if split_into == "one chunk" else [wire[i : i + 1] for i in range(len(wire))]
    assert [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.close() == expected


def whatwg_events(wire: bytes) -> list[bytes]:
    """The event-stream rules applied to a whole stream at once, straight from the spec's wording: what the
    incremental decoder must give however the stream is split (plus its leniency: an unended last event counts)."""
    events, data = [], None
    for line in re.split(rb"\r\n|\r|\n", wire.removeprefix(b"\xef\xbb\xbf")):
        if not line:
            if data is not None:
                events.append(b"\n".join(data))
            data = None
            continue
        name, _, value = line.partition(b":")
        if name == b"data":
            data = [*(data or []), value.removeprefix(b" ")]
    return events if data is None else [*events, b"\n".join(data)]


LINES = [b"data: x", b"data", b"data:", b"data:  x", b": c", b"event: y", b"datum: z", b"", b"\xef\xbb\xbf", b"x"]


@settings(max_examples=500, deadline=None)
@given(pieces=st.lists(st.tuples(st.sampled_from(LINES), st.sampled_from([b"\n", b"\r", b"\r\n", b""]), st.booleans()),
                       max_size=30))
def test_any_stream_split_anyhow_decodes_as_the_rules_say(pieces):
    """Lines (or pieces of lines, without their end) with any line end, the stream cut after any of them: what the
    decoder reads chunk by chunk is what the rules read from the whole."""
    chunks, chunk = [], b""
    for line, end, cut_after in pieces:
        chunk += line + end
        if cut_after:
            chunks, chunk = [*chunks, chunk], b""
    decoder = EventDecoder()
    assert [event for chunk in [*chunks, chunk] for event in decoder.feed(chunk)] + decoder.close() \
        == whatwg_events(b"".join(line + end for line, end, _ in pieces))


def test_an_empty_chunk_between_a_cr_and_its_lf_leaves_them_one_line_end():
    decoder = EventDecoder()  # found by the test above: the empty chunk used to end the CR's wait for its LF
    assert [event for chunk in [b"data: x\r", b"", b"\n", b"data: x\n"] for event in decoder.feed(chunk)] == []
    assert decoder.feed(b"\n") == [b"x\nx"]


def test_an_event_begun_in_one_chunk_goes_on_in_the_next():
    decoder = EventDecoder()
    assert decoder.feed(b"data: a\n") == [] and decoder.feed(b"data: b\n\n") == [b"a\nb"]


def test_a_stream_ending_mid_event_still_counts_its_data():
    decoder = EventDecoder()
    assert decoder.feed(b"data: a\ndata: [DONE]") == [] and decoder.close() == [b"a\n[DONE]"]


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
LINE_ENDS = [b"\n", b"\r\n", b"\r"]


@settings(max_examples=300, deadline=None)
@given(
    pieces=pieces,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    noise=st.lists(st.sampled_from(NOISE), max_size=40),
    bom=st.booleans(),
    seed=st.randoms(use_true_random=False),
)
def test_any_split_with_noise_inside_events_and_any_line_ends_yields_exactly_the_final_content(
    pieces, cuts, noise, bom, seed
):
    # each event is its lines, then a blank line; noise lines go anywhere among them, inside events too
    events = [[event("".join(pieces[: index + 1]))[:-2]] for index in range(len(pieces))] + [[b"data: [DONE]"]]
    for line in noise:
        lines = events[seed.randrange(len(events))]
        lines.insert(seed.randrange(len(lines) + 1), line.rstrip(b"\r\n"))
    wire, last_end = b"", b""
    for line in (line for lines in events for line in [*lines, b""]):
        end = seed.choice(LINE_ENDS)
        if last_end == b"\r" and not line and end == b"\n":
            end = b"\r\n"  # CR then LF would be one line end, not an empty line
        wire, last_end = wire + line + end, end
    deltas = deltas_of(split((b"\xef\xbb\xbf" if bom else b"") + wire, cuts))
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


@pytest.mark.parametrize("endless", [b"data: " + b"x" * 4096, b"data: " + b"x" * 4090 + b"\n"], ids=["line", "event"])
def test_a_line_or_event_past_the_limit_ends_the_reply_after_the_text_before_it(endless):
    received: list[str] = []
    chunks = [event("Hi"), *[endless] * (EVENT_BYTES // 4096 + 2)]
    with pytest.raises(IncompleteReplyError) as error:
        deltas_of(chunks, received)
    assert received == ["Hi"]
    assert str(error.value) == ("GPTalk stream: an event is over the 1,048,576-byte limit; the reply is incomplete "
                                "after 2 characters")


def test_the_longest_reply_a_model_gives_fits_the_limit_with_room_to_spare():
    reply = "🌍" * 60_000  # 240 KB of UTF-8, 720 KB as JSON escapes: more than a 16k-token reply can be
    wire = b"data: " + json.dumps({"content": reply}).encode() + b"\n\ndata: [DONE]\n\n"
    assert "".join(deltas_of([wire[i : i + 1000] for i in range(0, len(wire), 1000)])) == reply
