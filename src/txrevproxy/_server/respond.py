"""
Answering a request with one of the proxy's own error responses.
"""

from __future__ import annotations

from txrevproxy._http.responses import error_body, reason_phrase


def respond_error(request: object, status: int) -> None:
    """
    Answer ``request`` with ``status``, its standard reason phrase and a short plain-text body, naming no server (in
    any ``Site``: the ``Server`` header Twisted's ``Site`` sets on every request is removed).
    """
    body = error_body(status)
    request.setResponseCode(status, reason_phrase(status))  # type: ignore[attr-defined]
    headers = request.responseHeaders  # type: ignore[attr-defined]
    headers.removeHeader(b"server")
    headers.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
    headers.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
    request.write(body)  # type: ignore[attr-defined]
    request.finish()  # type: ignore[attr-defined]
