"""
Body framing decisions for requests and responses, and the chunked coding.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txrevproxy._http.framing import (
    CHUNKED,
    LAST_CHUNK,
    NO_BODY,
    UNTIL_CLOSE,
    ChunkedDecoder,
    Framing,
    FramingError,
    Kind,
    encode_chunk,
    parse_content_length,
    request_framing,
    response_framing,
)

TE = b"Transfer-Encoding"
CL = b"Content-Length"


def _length(n):
    return Framing(Kind.LENGTH, n)


# -- requests -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, headers, expected",
    [
        (b"HTTP/1.1", [], NO_BODY),
        (b"HTTP/1.0", [], NO_BODY),
        (b"HTTP/1.1", [(CL, b"0")], NO_BODY),
        (b"HTTP/1.1", [(CL, b"5")], _length(5)),
        (b"HTTP/1.0", [(CL, b"5")], _length(5)),
        (b"HTTP/1.1", [(b"content-length", b" 5\t")], _length(5)),
        (b"HTTP/1.1", [(CL, b"5"), (CL, b"5")], _length(5)),
        (b"HTTP/1.1", [(CL, b"5, 5")], _length(5)),
        (b"HTTP/1.1", [(CL, b"5,5"), (CL, b" 5 ")], _length(5)),
        (b"HTTP/1.1", [(CL, b"007")], _length(7)),
        (b"HTTP/1.1", [(CL, b"9" * 20)], _length(int(b"9" * 20))),
        (b"HTTP/1.1", [(TE, b"chunked")], CHUNKED),
        (b"HTTP/1.1", [(b"transfer-encoding", b"Chunked")], CHUNKED),
        (b"HTTP/1.1", [(TE, b" chunked ")], CHUNKED),
    ],
)
def test_request_framing(version, headers, expected):
    """A request body is absent, Content-Length long, or chunked, as its headers say (RFC 9112 section 6.3)."""
    assert request_framing(version, headers) == expected


@pytest.mark.parametrize(
    "version, headers, status",
    [
        # Transfer-Encoding and Content-Length together: refused, not guessed (RFC 9112 section 6.1).
        (b"HTTP/1.1", [(TE, b"chunked"), (CL, b"5")], 400),
        (b"HTTP/1.1", [(CL, b"5"), (TE, b"chunked")], 400),
        # Transfer-Encoding in HTTP/1.0 is faulty framing (RFC 9112 section 6.1).
        (b"HTTP/1.0", [(TE, b"chunked")], 400),
        # chunked not final, or twice: length cannot be determined (RFC 9112 section 6.3).
        (b"HTTP/1.1", [(TE, b"chunked, gzip")], 400),
        (b"HTTP/1.1", [(TE, b"chunked"), (TE, b"identity")], 400),
        (b"HTTP/1.1", [(TE, b"chunked, chunked")], 400),
        (b"HTTP/1.1", [(TE, b"chunked"), (TE, b"chunked")], 400),
        (b"HTTP/1.1", [(TE, b"")], 400),
        # Content-Length values.
        (b"HTTP/1.1", [(CL, b"5"), (CL, b"6")], 400),
        (b"HTTP/1.1", [(CL, b"5, 6")], 400),
        (b"HTTP/1.1", [(CL, b"5,")], 400),
        (b"HTTP/1.1", [(CL, b"")], 400),
        (b"HTTP/1.1", [(CL, b"+5")], 400),
        (b"HTTP/1.1", [(CL, b"-5")], 400),
        (b"HTTP/1.1", [(CL, b"-0")], 400),
        (b"HTTP/1.1", [(CL, b"0x5")], 400),
        (b"HTTP/1.1", [(CL, b"5 5")], 400),
        (b"HTTP/1.1", [(CL, b"5.0")], 400),
        (b"HTTP/1.1", [(CL, b"1e3")], 400),
        (b"HTTP/1.1", [(CL, b"\xd9\xa5")], 400),  # ARABIC-INDIC DIGIT FIVE in UTF-8
        (b"HTTP/1.1", [(CL, b"1" * 21)], 400),
    ],
)
def test_request_framing_errors(version, headers, status):
    """An ambiguous or unsupported request framing is refused with the right status."""
    with pytest.raises(FramingError) as info:
        request_framing(version, headers)
    assert info.value.status == status
    assert str(info.value) == info.value.reason


@pytest.mark.parametrize("value", [b"gzip", b"identity", b"x-custom", b"gzip, deflate"])
def test_request_framing_unsupported_coding_is_refused(value):
    """A request whose only codings are ones the proxy does not implement is refused, never guessed at."""
    with pytest.raises(FramingError) as info:
        request_framing(b"HTTP/1.1", [(TE, value)])
    assert info.value.status in (400, 501)


@pytest.mark.parametrize("value", [b"gzip", b"identity", b"x-custom"])
def test_request_framing_coding_not_ending_in_chunked_is_400(value):
    """A request Transfer-Encoding that does not end in chunked has undeterminable length: 400."""
    with pytest.raises(FramingError) as info:
        request_framing(b"HTTP/1.1", [(TE, value)])
    assert info.value.status == 400


@pytest.mark.parametrize("value", [b"chunked,", b", chunked", b"chunked, ,"])
def test_request_framing_ignores_empty_transfer_coding_elements(value):
    """Empty elements in a Transfer-Encoding list are ignored, so the request is chunked."""
    assert request_framing(b"HTTP/1.1", [(TE, value)]) == CHUNKED


def test_request_framing_unknown_coding_before_chunked_is_501():
    """gzip before a final chunked is a well-framed request with an unsupported coding: 501."""
    with pytest.raises(FramingError) as info:
        request_framing(b"HTTP/1.1", [(TE, b"gzip, chunked")])
    assert info.value.status == 501


# -- responses ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, status, headers, expected",
    [
        # Never a body: HEAD, 1xx, 204, 304, whatever the headers say (RFC 9112 section 6.3 item 1).
        (b"HEAD", 200, [(CL, b"10")], NO_BODY),
        (b"HEAD", 200, [(TE, b"chunked")], NO_BODY),
        (b"GET", 100, [(CL, b"10")], NO_BODY),
        (b"GET", 101, [], NO_BODY),
        (b"GET", 103, [(TE, b"chunked")], NO_BODY),
        (b"GET", 204, [(CL, b"10")], NO_BODY),
        (b"GET", 304, [(TE, b"chunked")], NO_BODY),
        (b"GET", 304, [(CL, b"10"), (CL, b"11")], NO_BODY),
        # Transfer-Encoding ending in chunked.
        (b"GET", 200, [(TE, b"chunked")], CHUNKED),
        (b"GET", 200, [(TE, b"CHUNKED")], CHUNKED),
        (b"POST", 500, [(TE, b"chunked")], CHUNKED),
        # Content-Length.
        (b"GET", 200, [(CL, b"10")], _length(10)),
        (b"GET", 200, [(CL, b"10"), (CL, b"10")], _length(10)),
        (b"GET", 200, [(CL, b"10, 10")], _length(10)),
        (b"GET", 200, [(CL, b"0")], NO_BODY),
        (b"GET", 404, [(CL, b"3")], _length(3)),
        # Neither: read until close (RFC 9112 section 6.3 item 8).
        (b"GET", 200, [], UNTIL_CLOSE),
        (b"POST", 201, [(b"Content-Type", b"text/plain")], UNTIL_CLOSE),
    ],
)
def test_response_framing(method, status, headers, expected):
    """A response body's framing follows the request method, the status and the headers (RFC 9112 section 6.3)."""
    assert response_framing(method, status, headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        [(TE, b"chunked"), (CL, b"10")],
        [(TE, b"chunked, chunked")],
        [(TE, b"chunked"), (TE, b"chunked")],
        # Only chunked is relayed: another coding would reach the client undone.
        [(TE, b"gzip, chunked")],
        [(TE, b"gzip"), (TE, b"CHUNKED")],
        [(TE, b"gzip")],
        [(TE, b"identity")],
        [(TE, b"chunked, gzip")],
        [(TE, b"")],
        [(TE, b",")],
        [(CL, b"10"), (CL, b"11")],
        [(CL, b"10, 11")],
        [(CL, b"+10")],
        [(CL, b"-1")],
        [(CL, b"0x10")],
        [(CL, b"1 0")],
        [(CL, b"")],
        [(CL, b"1" * 21)],
    ],
)
def test_response_framing_errors_are_502(headers):
    """An upstream response with ambiguous framing is an error the proxy answers with 502."""
    with pytest.raises(FramingError) as info:
        response_framing(b"GET", 200, headers)
    assert info.value.status == 502


@pytest.mark.parametrize("value", [b"chunked,", b"chunked, "])
def test_response_framing_ignores_empty_transfer_coding_elements(value):
    """A trailing empty element after chunked leaves chunked as the final coding."""
    assert response_framing(b"GET", 200, [(TE, value)]) == CHUNKED


def test_parse_content_length_absent_is_none():
    """No Content-Length values means no length, not zero."""
    assert parse_content_length([]) is None


# -- the chunked decoder -----------------------------------------------------------------------------------------

BODY = b'4\r\nWiki\r\n5;name=value;q="a;b"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX: y\r\n\r\n'
BODY_TEXT = b"Wikipedia in\r\n\r\nchunks."


def _decode(pieces, status=400):
    out = []
    decoder = ChunkedDecoder(out.append, status)
    results = [decoder.feed(p) for p in pieces]
    return b"".join(out), results, decoder


def test_decoder_whole_body():
    """A whole chunked body decodes, extensions and trailers dropped, and b"" is returned when nothing follows."""
    data, results, decoder = _decode([BODY])
    assert data == BODY_TEXT
    assert results == [b""]
    assert decoder.done


@pytest.mark.parametrize("cut", range(1, len(BODY)))
def test_decoder_split_anywhere(cut):
    """Splitting the input at any byte position gives the same data; feed is None until the body ends."""
    data, results, decoder = _decode([BODY[:cut], BODY[cut:]])
    assert data == BODY_TEXT
    assert results == [None, b""]
    assert decoder.done


def test_decoder_one_byte_at_a_time():
    """Feeding one byte at a time gives the same data and never hands on an empty piece."""
    out = []
    decoder = ChunkedDecoder(out.append)
    results = [decoder.feed(BODY[i : i + 1]) for i in range(len(BODY))]
    assert b"".join(out) == BODY_TEXT
    assert all(out)
    assert results[:-1] == [None] * (len(BODY) - 1)
    assert results[-1] == b""


def test_decoder_returns_bytes_after_the_body():
    """Bytes after the last chunk and trailers are returned (the next message on the connection), not decoded."""
    data, results, _ = _decode([b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n"])
    assert data == b"abc"
    assert results == [b"GET / HTTP/1.1\r\n"]


def test_decoder_after_done_returns_everything_fed():
    """Once done, further feeds are returned unchanged."""
    data, results, _ = _decode([b"0\r\n\r\n", b"more", b""])
    assert data == b""
    assert results == [b"", b"more", b""]


def test_decoder_empty_body():
    """A lone last chunk is an empty body."""
    data, results, decoder = _decode([LAST_CHUNK])
    assert (data, results, decoder.done) == (b"", [b""], True)


@pytest.mark.parametrize(
    "chunk_line",
    [b"a", b"A", b"00a", b"a;ext", b"a ;ext", b'a\t;ext="q"', b"a;a=1;b=2", b"a "],
)
def test_decoder_size_forms(chunk_line):
    """Hex sizes in either case, leading zeros, extensions and whitespace before them are accepted."""
    data, results, _ = _decode([chunk_line + b"\r\n" + b"0123456789\r\n0\r\n\r\n"])
    assert data == b"0123456789"
    assert results == [b""]


def test_decoder_largest_size_is_16_hex_digits():
    """A 16-digit chunk size is accepted (and its data awaited)."""
    out = []
    decoder = ChunkedDecoder(out.append)
    assert decoder.feed(b"000000000000000f\r\n0123") is None
    assert out == [b"0123"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\r\nabc\r\n0\r\n\r\n", id="empty-size"),
        pytest.param(b"g\r\n", id="not-hex"),
        pytest.param(b"0x3\r\nabc\r\n0\r\n\r\n", id="0x"),
        pytest.param(b"+3\r\nabc\r\n0\r\n\r\n", id="plus"),
        pytest.param(b"-3\r\nabc\r\n0\r\n\r\n", id="minus"),
        pytest.param(b" 3\r\nabc\r\n0\r\n\r\n", id="leading-space"),
        pytest.param(b";ext\r\n", id="only-extension"),
        pytest.param(b"1" + b"0" * 16 + b"\r\n", id="17-digits"),
        pytest.param(b"3\r\nabcX\r\n0\r\n\r\n", id="no-crlf-after-data"),
        pytest.param(b"3\r\nabc\n0\r\n\r\n", id="lf-after-data"),
        pytest.param(b"3\r\nabc\rX0\r\n\r\n", id="cr-after-data"),
        pytest.param(b"3\nabc\r\n0\r\n\r\n", id="bare-lf-in-size"),
        pytest.param(b"3\rx\r\nabc\r\n0\r\n\r\n", id="bare-cr-in-size"),
        pytest.param(b"3;a\nb\r\nabc\r\n0\r\n\r\n", id="bare-lf-in-extension"),
        pytest.param(b"0\r\nX: y\nZ: w\r\n\r\n", id="bare-lf-in-trailer"),
        pytest.param(b"1" * 5000, id="size-line-too-long"),
        pytest.param(b"0\r\nX: " + b"y" * 20000, id="trailer-line-too-long"),
        pytest.param(b"0\r\n" + b"X: yyyyyyyy\r\n" * 2000 + b"\r\n", id="trailers-too-large"),
    ],
)
def test_decoder_errors(body):
    """Malformed chunked input raises FramingError with the decoder's status, fed whole or a byte at a time."""
    with pytest.raises(FramingError) as info:
        _decode([body], status=502)
    assert info.value.status == 502
    with pytest.raises(FramingError):
        _decode([body[i : i + 1] for i in range(len(body))])


LONG_CHUNK_LINE = b"1;" + b"a" * 5000 + b"\r\nx\r\n0\r\n\r\n"


def test_decoder_long_chunk_line_refused_when_split():
    """A chunk-size line over the limit (here by a long extension) is refused when it arrives in pieces."""
    with pytest.raises(FramingError, match="too long"):
        _decode([LONG_CHUNK_LINE[i : i + 1] for i in range(len(LONG_CHUNK_LINE))])


def test_decoder_long_chunk_line_refused_when_whole():
    """A chunk-size line over the limit is refused even when it arrives whole, so the outcome is split-independent."""
    with pytest.raises(FramingError, match="too long"):
        _decode([LONG_CHUNK_LINE])


def test_decoder_default_status_is_400():
    """A decoder for a request body fails with 400 by default."""
    with pytest.raises(FramingError) as info:
        _decode([b"zz\r\n"])
    assert info.value.status == 400


def test_encode_chunk():
    """encode_chunk writes the lower-case hex size, CRLF, the data and CRLF."""
    assert b"".join(encode_chunk(b"x" * 26)) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
    tail=st.binary(max_size=20),
)
def test_chunked_round_trip(chunks, cuts, tail):
    """Any chunks, encoded and fed to the decoder in any splits, decode to the same bytes; what follows is returned."""
    wire = b"".join(piece for chunk in chunks for piece in encode_chunk(chunk)) + LAST_CHUNK + tail
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    pieces = [wire[a:b] for a, b in itertools.pairwise(bounds)]
    out = []
    decoder = ChunkedDecoder(out.append)
    after = [r for r in (decoder.feed(p) for p in pieces) if r is not None]
    assert b"".join(out) == b"".join(chunks)
    assert decoder.done
    assert b"".join(after) == tail
