"""Errors outside DRF's views (unknown URLs, requests Django refuses, crashes) as JSON under /v1, HTML elsewhere.

The body is DRF's shape, `{"detail": "..."}`, and names what the client did wrong, never internals:
a 500 never carries the traceback.
"""

import logging
from collections.abc import Callable

from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from core.unavailable import database_unavailable

logger = logging.getLogger(__name__)

# Requests Django itself refuses (a SuspiciousOperation, answered by handler400), told as the client should read them.
_REFUSED = {
    DisallowedHost: (400, "The Host header names a host this server does not serve."),
    RequestDataTooBig: (413, "Request body is too large."),
}


def _is_api(request: HttpRequest) -> bool:
    return request.path == "/v1" or request.path.startswith("/v1/")


def _error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


@csrf_exempt  # the API authenticates by bearer key, never by cookie: a CSRF check only turns a 404 into an HTML 403
def api_not_found(request: HttpRequest) -> HttpResponse:
    return _error(404, "Not found.")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _error(*_REFUSED.get(type(exception), (400, "Bad request.")))
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _error(403, "You do not have permission to perform this action.")
    return defaults.permission_denied(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _error(404, "Not found.")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return _error(500, "Internal server error.")
    return defaults.server_error(request)


class DatabaseUnavailableMiddleware:
    """A page outside the API (the admin, /docs) whose database is away or not yet migrated: a 503 that says so.

    Django answered a 500 and logged a traceback for each such request, for what is neither a bug nor the
    client's doing; the outage is said once a minute instead (core.unavailable), as the API says it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        unavailable = database_unavailable(exception, f"{request.method} {request.path}", logger)
        if unavailable is None:
            return None
        if _is_api(request):
            response: HttpResponse = _error(503, unavailable.detail)
        else:
            response = HttpResponse(unavailable.detail, content_type="text/plain; charset=utf-8", status=503)
        response["Retry-After"] = str(unavailable.retry_after)
        response._has_been_logged = True  # said by core.outages: not again by django.request
        return response


class NulCharacterMiddleware:
    """A NUL character, which PostgreSQL refuses in text, kept away from the pages that would pass it on.

    Outside the API, an address holding one is a 400 that says where: the admin hands its list filters and object
    ids to the database as they come, so `?id__exact=%00` or `/admin/…/%00/change/` raised there, a 500 and a
    traceback for a client's mistake. The API checks its ids and parameters itself and names them in its own JSON
    400s. A cookie holding one (Django's parser unescapes `"\\000"`) cannot be a session anyone was given: it is
    dropped, rather than be looked up and fail on every page that reads the session.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name in [name for name, value in request.COOKIES.items() if "\x00" in name or "\x00" in value]:
            del request.COOKIES[name]
        if not _is_api(request):
            if "\x00" in request.path:
                return _plain_400("The address contains a NUL character (%00), which no id can hold.")
            for name, values in request.GET.lists():
                if "\x00" in name or any("\x00" in value for value in values):
                    return _plain_400(
                        f"The query parameter {name!r} contains a NUL character (%00), which no field can hold."
                    )
        return self.get_response(request)


def _plain_400(text: str) -> HttpResponse:
    return HttpResponseBadRequest(text, content_type="text/plain; charset=utf-8")
