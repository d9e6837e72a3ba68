"""A body over ASIRI_MAX_REQUEST_BYTES on any /v1/ path is the API's JSON 413, whatever its size or framing.

Without this, DRF reads JSON through `request.body`, so a body over Django's own limit
(DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB) raised RequestDataTooBig: an HTML 400 and an ERROR traceback;
and Django reads a chunked body (no Content-Length) as empty. Here a declared length is judged
before anything is kept, and a chunked body is kept up to one byte past the limit, then handed on
as if it had come with its length. What is refused is still read and dropped, up to DRAIN_BYTES
(memory stays flat), because a client that sends its whole body before reading the answer (Python's
http.client and requests do) would otherwise see the connection reset instead of the 413.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse, JsonResponse
from gunicorn.http.errors import ParseException

# What reading a client's body raises when it breaks off (OSError) or breaks its chunked framing.
UNREADABLE = (OSError, ParseException)

DRAIN_BYTES = 32 * 1024 * 1024
_PIECE = 64 * 1024


def read_at_most(stream, size: int) -> bytes:
    """Up to `size` bytes, however few a server's stream hands over per read."""
    parts: list[bytes] = []
    while size > 0 and (part := stream.read(min(size, _PIECE))):
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def drain(stream, size: int) -> None:
    try:
        while size > 0 and (part := stream.read(min(size, _PIECE))):
            size -= len(part)
    except UNREADABLE:
        pass  # the client went away or broke its framing: nothing left to be polite to


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/v1/"):
            return self.get_response(request)
        limit = settings.ASIRI_MAX_REQUEST_BYTES
        declared = request.META.get("CONTENT_LENGTH", "").strip()
        if declared:
            if declared.isdigit() and int(declared) > limit:
                drain(request, min(int(declared), DRAIN_BYTES))
                return too_large(limit)
        elif "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            stream = request.META["wsgi.input"]
            try:
                body = read_at_most(stream, limit + 1)
            except UNREADABLE:
                return JsonResponse({"detail": "Request body is not valid chunked encoding."}, status=400)
            if len(body) > limit:
                drain(stream, DRAIN_BYTES)
                return too_large(limit)
            # Django sized its stream from the absent Content-Length, so it would read nothing.
            request.META["CONTENT_LENGTH"] = str(len(body))
            request._stream = LimitedStream(io.BytesIO(body), len(body))
        return self.get_response(request)


def too_large(limit: int) -> JsonResponse:
    return JsonResponse({"detail": f"Request body is larger than {limit} bytes."}, status=413)
