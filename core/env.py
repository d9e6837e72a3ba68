"""Read settings from the environment, failing loudly on a value we cannot use.

An empty variable means "use the default", so `FOO=` in a Procfile or a .env file never
switches something on by accident.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true"}
_FALSE = {"0", "false"}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "")
    return value if value != "" else default


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 0, 1, true, false (any case); got {value!r}.")


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    value = env_str(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {value!r}.") from None
    if not number > minimum:
        raise ImproperlyConfigured(f"{name} must be greater than {minimum:g}; got {value!r}.")
    return number


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number; got {value!r}.") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {value!r}.")
    return number


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name)
    if value is None:
        return default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_delays(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """A comma-separated list of positive delays in seconds, e.g. `5,300,1800`."""
    value = env_str(name)
    if value is None:
        return default
    delays = []
    for item in value.split(","):
        try:
            delay = float(item.strip())
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must be comma-separated seconds such as '5,300,1800'; got {value!r}."
            ) from None
        if delay < 0:
            raise ImproperlyConfigured(f"{name} must not contain negative delays; got {value!r}.")
        delays.append(delay)
    return tuple(delays)


RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(value: str) -> tuple[int, float]:
    """`600/min` → (600 requests, 60.0 seconds); ValueError for anything else."""
    count, _, period = value.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or period.strip().lower() not in RATE_PERIODS:
        raise ValueError(f"A rate looks like 600/min (or /sec, /hour); got {value!r}.")
    return int(count), float(RATE_PERIODS[period.strip().lower()])


def env_rate(name: str, default: str) -> str:
    value = env_str(name, default)
    try:
        parse_rate(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must look like 600/min (or /sec, /hour); got {value!r}.") from None
    return value


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def env_networks(name: str, default: tuple[str, ...]) -> tuple[Network, ...]:
    """Comma-separated CIDR networks such as `127.0.0.0/8,::1/128`; `none` for no network at all."""
    value = env_str(name)
    items = default if value is None else tuple(item.strip() for item in value.split(",") if item.strip())
    if value is not None and value.strip().lower() == "none":
        return ()
    try:
        return tuple(ipaddress.ip_network(item) for item in items)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be comma-separated networks such as '127.0.0.0/8,::1/128' (or 'none'); got {value!r}."
        ) from None


def env_address(name: str) -> tuple[str, int] | None:
    """`host:port` (`[::1]:9108` for IPv6) to listen on, or None when unset."""
    value = env_str(name)
    if value is None:
        return None
    host, _, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise ImproperlyConfigured(f"{name} must be an address and port such as '127.0.0.1:9108'; got {value!r}.")
    return host, number


# How a rediss:// URL may say whether to check the server's certificate: redis-py's spelling and Celery's.
_CERT_REQS = {"none": "none", "optional": "optional", "required": "required"}
_CERT_REQS.update({f"cert_{value}": value for value in list(_CERT_REQS)})


def env_redis_url(name: str, default: str | None = None) -> str | None:
    """A broker or Redis URL; a `rediss://` one checks the server's certificate unless it says `ssl_cert_reqs=none`.

    Given a rediss:// URL without `ssl_cert_reqs`, kombu (the broker's client) did not check the certificate at
    all, and warned so at every connection (beat's: every second), while redis-py (the rate limits, the wake-ups)
    checked it: one URL, two behaviours, and the default the unsafe one. The URL now says `required` unless it
    says otherwise, in the spelling both clients read; a private CA is `ssl_ca_certs=/path/to/ca.pem`, a
    provider's self-signed certificate (Heroku Redis) the explicit `ssl_cert_reqs=none`.
    """
    url = env_str(name, default)
    if not url or urlsplit(url).scheme != "rediss":
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [value for key, value in query if key == "ssl_cert_reqs"]
    if len(given) > 1 or (given and given[0].lower() not in _CERT_REQS):
        raise ImproperlyConfigured(
            f"{name}: ssl_cert_reqs must be given once, as required, optional or none (got {', '.join(given)})."
        )
    wanted = _CERT_REQS[given[0].lower()] if given else "required"
    query = [(key, value) for key, value in query if key != "ssl_cert_reqs"] + [("ssl_cert_reqs", wanted)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))
