"""gunicorn settings for the Procfile's `web` (`-c asiri/gunicorn.conf.py`); its command-line options add to these."""

from __future__ import annotations

import os
import re
from typing import Any

from gunicorn.glogging import Logger

# gunicorn would take X-Forwarded-Proto, X-Forwarded-Protocol and X-Forwarded-Ssl for https from any loopback
# peer (its forwarded_allow_ips default) before Django sees the request: asiri.proxies alone decides.
secure_scheme_headers: dict[str, str] = {}

# The access log names no credential a client may have sent: no `%(u)s` (gunicorn decodes the user of
# `Authorization: Basic`, so `curl -u "$KEY:"` wrote the key), no query string (`?api_key=…`,
# `?access_token=…`), no Referer (a page's address with a token in it). The path, the status, the
# size, the time and the request id (X-Request-ID, the same as in the request log) remain.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s" %({x-request-id}o)s'

_QUERY_VALUE = re.compile(r"([?&;][^=&;#\s'\"]*)=[^&;#\s'\"]*")


def without_query_values(text: Any) -> Any:
    """`/v1/x?api_key=K&limit=5` → `/v1/x?api_key=…&limit=…` in any string; anything else as it is."""
    return _QUERY_VALUE.sub(r"\1=…", text) if isinstance(text, str) else text


class KeylessLogger(Logger):
    """gunicorn's own lines without query values: a request it cannot parse, or one that times out,
    is logged with its request line or URI, `?api_key=…` included."""

    def _scrubbed(self, level: str, msg: Any, args: tuple, kwargs: dict) -> None:
        getattr(super(), level)(without_query_values(msg), *map(without_query_values, args), **kwargs)

    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._scrubbed("critical", msg, args, kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._scrubbed("error", msg, args, kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._scrubbed("warning", msg, args, kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._scrubbed("info", msg, args, kwargs)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._scrubbed("debug", msg, args, kwargs)

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._scrubbed("exception", msg, args, kwargs)


logger_class = KeylessLogger


def child_exit(server: Any, worker: Any) -> None:
    """Multiprocess metrics (PROMETHEUS_MULTIPROC_DIR): a worker that ended must stop counting in live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
