"""Whatever a server sends, the login, ask and stream parsers give exact results or a g4f error, never a builtin one."""

from __future__ import annotations

import json
import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from g4f_gptalk.protocol.auth import Token, expiry_of
from g4f_gptalk.protocol.errors import G4FError, answer_data, retry_after, token_of
from g4f_gptalk.protocol.sse import ReplyText

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# answers shaped like GPTalk's envelope, with anything in its fields
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "code": st.sampled_from([0, 200, None, 401, 10401, 10001]) | json_values,
        "msg": json_values,
        "data": st.fixed_dictionaries({}, optional={"token": st.text() | json_values, "expires_at": json_values})
        | json_values,
    },
)
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 429, 500, 503]) | st.integers(100, 599)
headers = st.fixed_dictionaries({}, optional={"Retry-After": st.text(max_size=40)})
bodies = st.binary(max_size=300) | envelopes.map(lambda value: json.dumps(value).encode())


def login(status: int, answer_headers: dict[str, str], body: bytes) -> Token:
    data = answer_data("login", status, answer_headers, body)
    return Token(token_of("login", data), expiry_of(data))


@settings(max_examples=500, deadline=None)
@given(status=statuses, answer_headers=headers, body=bodies)
@example(status=429, answer_headers={"Retry-After": "¹"}, body=b"")  # a digit to str.isdigit, not to float
def test_any_login_answer_gives_a_usable_token_or_a_g4f_error(status, answer_headers, body):
    try:
        token = login(status, answer_headers, body)
    except G4FError:
        return
    assert 200 <= status < 300
    assert token.value == json.loads(body)["data"]["token"] and token.value.isprintable()
    assert math.isfinite(token.expires_at)


@settings(max_examples=500, deadline=None)
@given(status=statuses, answer_headers=headers, body=bodies)
def test_any_ask_answer_gives_the_stream_token_or_a_g4f_error(status, answer_headers, body):
    try:
        stream_token = token_of("ask", answer_data("ask", status, answer_headers, body))
    except G4FError:
        return
    assert stream_token == json.loads(body)["data"]["token"]


def read(chunks: list[bytes]) -> tuple[str, G4FError | None, ReplyText]:
    """What a caller receives from a stream of ``chunks``: the text, and the error that ended it, if any."""
    reply, received = ReplyText(), []
    try:
        for chunk in chunks:
            received.extend(reply.deltas(chunk))
            if reply.done:
                break
        received.extend(reply.end())
    except G4FError as exc:
        return "".join(received), exc, reply
    return "".join(received), None, reply


@settings(max_examples=500, deadline=None)
@given(chunks=st.lists(st.binary(max_size=60), max_size=12))
def test_any_stream_bytes_give_text_or_a_g4f_error(chunks):
    text, error, reply = read(chunks)
    assert text == reply.text  # what was delivered is what the events said, whatever followed
    assert error is not None or reply.done


@settings(max_examples=500, deadline=None)
@given(values=st.lists(st.builds(lambda text: {"content": text}, st.text(max_size=6)) | json_values, max_size=8),
       cumulative=st.booleans(), done=st.booleans())
def test_any_json_in_events_gives_exactly_the_content_or_a_g4f_error_after_it(values, cumulative, done):
    expected, failed, sent = "", False, ""
    events = []
    for value in values:
        if cumulative and isinstance(value, dict) and set(value) == {"content"} and isinstance(value["content"], str):
            sent += value["content"]
            value = {"content": sent}
        events.append(value)
        content = value.get("content") if isinstance(value, dict) else None
        if failed:
            continue
        if isinstance(content, str) and (content.startswith(expected) or expected.startswith(content)):
            expected = max(expected, content, key=len)
        else:
            failed = True  # not content, or a rewrite: the reply stops here
    wire = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)
    text, error, _reply = read([wire + (b"data: [DONE]\n\n" if done else b"")])
    assert text == expected
    assert (error is None) is (done and not failed)


def test_retry_after_takes_ascii_seconds_or_an_http_date():
    assert retry_after({"Retry-After": " 120 "}) == 120.0
    assert retry_after({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}) == 0.0  # a date past: no wait
    assert retry_after({"Retry-After": "¹"}) is None and retry_after({"Retry-After": "٣"}) is None
    assert retry_after({}) is None
