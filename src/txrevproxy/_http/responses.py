"""
The responses the proxy makes itself: standard reason phrases and short plain-text error responses.
"""

from __future__ import annotations

from http import HTTPStatus

_PHRASES = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
# The names RFC 9110 gave these (http.HTTPStatus has them from Python 3.13 on; before, the older RFC 7231 ones, such
# as "Request-URI Too Long"): the same phrases whatever the Python version.
_PHRASES.update(
    {
        413: b"Content Too Large",
        414: b"URI Too Long",
        416: b"Range Not Satisfiable",
        422: b"Unprocessable Content",
    }
)


def reason_phrase(status: int) -> bytes:
    """
    The standard reason phrase of ``status`` (RFC 9110 section 15; ``http.HTTPStatus`` for codes defined elsewhere),
    ``b""`` for a code without one.

    An empty phrase is valid on a status line (RFC 9112 section 4: ``reason-phrase`` may be empty).
    """
    return _PHRASES.get(status, b"")


def error_body(status: int) -> bytes:
    """
    The short plain-text body of every error the proxy answers itself: ``431 Request Header Fields Too Large``.
    """
    phrase = reason_phrase(status)
    return b"%d %s\n" % (status, phrase) if phrase else b"%d\n" % (status,)


def error_response(status: int, connection_close: bool = True) -> bytes:
    """
    A complete, short plain-text error response.
    """
    body = error_body(status)
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status)),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % (len(body),),
            b"Connection: close\r\n" if connection_close else b"",
            b"\r\n",
            body,
        ]
    )
