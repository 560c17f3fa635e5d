"""Client settings, built from whatever the connection holds and checked before any call is made."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from datris_provider.client.errors import DatrisConfigError
from datris_provider.version import __version__

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT_SECONDS = 30.0
USER_AGENT = f"airflow-provider-datris/{__version__}"


@dataclass(frozen=True)
class RetryPolicy:
    """How the client repeats calls that are safe to repeat (the GETs and ``job/kill``).

    :param max_attempts: attempts in all, the first included.
    :param base_delay: seconds before the first repeat; doubled each time, with full jitter.
    :param max_delay: the longest single wait, ``Retry-After`` included.
    """

    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0


@dataclass(frozen=True)
class ClientSettings:
    """Everything the HTTP client needs, already validated.

    :param base_url: the Datris base URL, without ``/api/v1``.
    :param api_key: sent as ``x-api-key`` when set.
    :param verify: TLS verification: ``True``, ``False`` or the path of a CA bundle.
    :param timeout: seconds for every call except the blocking tap run.
    :param retry: how safe calls are repeated.
    """

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    verify: bool | str = True
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ui_url: str = ""

    @property
    def datris_ui_url(self) -> str:
        """Where the Datris UI lives: the ``ui_url`` extra, or the host when the UI proxies the API."""
        return self.ui_url or self.base_url

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    def warnings(self) -> list[str]:
        """Risky but legal choices the user should hear about."""
        found = []
        if self.verify is False:
            found.append(
                "TLS verification is off for the Datris connection (extra 'verify': false); "
                "the server's identity is not checked."
            )
        parts = urlsplit(self.base_url)
        if self.api_key and parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            found.append(
                f"The API key is sent over plain http to {parts.hostname}; use https so it cannot be read on the way."
            )
        return found


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def normalise_base_url(host: str | None, *, conn_id: str = "datris_default") -> str:
    """Check the connection's Host and return it without a trailing slash."""
    if not host or not host.strip():
        raise DatrisConfigError(
            f"The connection '{conn_id}' has no Host. Set Host to the Datris base URL, "
            "e.g. https://datris.example.com or http://localhost:8080."
        )
    host = host.strip().rstrip("/")
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DatrisConfigError(
            f"The connection '{conn_id}' Host '{host}' has no http:// or https:// scheme. "
            f"Set it to the full base URL, e.g. https://{host}."
        )
    if parts.path.rstrip("/").endswith(API_PREFIX):
        raise DatrisConfigError(
            f"The connection '{conn_id}' Host '{host}' ends in {API_PREFIX}; the provider adds that itself. "
            f"Set Host to '{host[: -len(API_PREFIX)]}'."
        )
    if parts.query or parts.fragment:
        raise DatrisConfigError(f"The connection '{conn_id}' Host '{host}' must not hold a query or fragment.")
    return host


def parse_verify(value: Any, *, conn_id: str = "datris_default") -> bool | str:
    """Read the ``verify`` extra: a boolean, a boolean spelled as text, or a CA-bundle path."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        if not os.path.exists(value):
            raise DatrisConfigError(
                f"The connection '{conn_id}' extra 'verify' names a CA bundle that does not exist: {value}. "
                "Give true, false, or the path of a readable CA bundle."
            )
        return value
    raise DatrisConfigError(
        f"The connection '{conn_id}' extra 'verify' must be true, false or a CA-bundle path, "
        f"not {type(value).__name__}."
    )


def parse_timeout(value: Any, *, conn_id: str = "datris_default") -> float:
    """Read the ``timeout`` extra (seconds, a positive number)."""
    if value is None:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise DatrisConfigError(
            f"The connection '{conn_id}' extra 'timeout' must be a number of seconds, not {value!r}."
        ) from None
    if seconds <= 0:
        raise DatrisConfigError(f"The connection '{conn_id}' extra 'timeout' must be positive, not {value!r}.")
    return seconds


def parse_retry_policy(extra: dict[str, Any], *, conn_id: str = "datris_default") -> RetryPolicy:
    """Read the ``retries`` (repeats after the first try) and ``retry_delay`` (seconds) extras."""
    default = RetryPolicy()
    retries = extra.get("retries", default.max_attempts - 1)
    delay = extra.get("retry_delay", default.base_delay)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DatrisConfigError(
            f"The connection '{conn_id}' extra 'retries' must be a whole number >= 0, not {retries!r}."
        )
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay <= 0:
        raise DatrisConfigError(f"The connection '{conn_id}' extra 'retry_delay' must be seconds > 0, not {delay!r}.")
    return RetryPolicy(max_attempts=retries + 1, base_delay=float(delay), max_delay=default.max_delay)


def settings_from_connection_fields(
    *,
    conn_id: str,
    host: str | None,
    password: str | None,
    extra: dict[str, Any],
    retry: RetryPolicy | None = None,
) -> ClientSettings:
    """Build checked settings from the fields of an Airflow connection (or anything shaped like one)."""
    return ClientSettings(
        base_url=normalise_base_url(host, conn_id=conn_id),
        api_key=password or None,
        verify=parse_verify(extra.get("verify"), conn_id=conn_id),
        timeout=parse_timeout(extra.get("timeout"), conn_id=conn_id),
        retry=retry or parse_retry_policy(extra, conn_id=conn_id),
        ui_url=_parse_ui_url(extra.get("ui_url"), conn_id=conn_id),
    )


def _parse_ui_url(value: Any, *, conn_id: str) -> str:
    if value in (None, ""):
        return ""
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DatrisConfigError(
            f"The connection '{conn_id}' extra 'ui_url' must be the Datris UI's full URL, "
            f"e.g. https://app.example.com, not {value!r}."
        )
    return str(value).rstrip("/")
