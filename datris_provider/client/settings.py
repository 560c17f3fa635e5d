"""Client settings, built from whatever the connection holds and checked before any call is made."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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

    :param base_url: the Datris base URL, without ``/api/v1`` (the connection's Port already in it).
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

    @property
    def endpoint(self) -> str:
        """The base URL with its port always written out, for messages about where a call went."""
        parts = urlsplit(self.base_url)
        if parts.port is not None:
            return self.base_url
        default_port = 443 if parts.scheme == "https" else 80
        return urlunsplit((parts.scheme, f"{parts.netloc}:{default_port}", parts.path, "", ""))

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


def connection_subject(conn_id: str | None) -> str:
    """How messages name the connection: by id, or as "This connection" when the id means nothing to the user
    (Airflow's Test button runs the hook under a throw-away id)."""
    return f"The connection '{conn_id}'" if conn_id else "This connection"


def normalise_base_url(host: str | None, port: int | None = None, *, conn_id: str | None = "datris_default") -> str:
    """Check the connection's Host and Port and return the base URL, Port in it, without a trailing slash.

    A Port of 0 or ``None`` means "not set" (Airflow's UI sends 0 for an empty Port field).
    """
    subject = connection_subject(conn_id)
    if not host or not host.strip():
        raise DatrisConfigError(
            f"{subject} has no Host. Set Host to the Datris base URL, "
            "e.g. https://datris.example.com or http://localhost:8080."
        )
    host = host.strip().rstrip("/")
    _refuse_credentials(host, subject=subject, field_name="Host")
    port = _parse_port(port, subject=subject)
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        example = f"https://{host}:{port}" if port and ":" not in host else f"https://{host}"
        raise DatrisConfigError(
            f"{subject} Host '{host}' has no http:// or https:// scheme. Set it to the full base URL, e.g. {example}."
        )
    try:
        host_port = parts.port
    except ValueError:
        raise DatrisConfigError(
            f"{subject} Host '{host}' has a port that is not a number from 1 to 65535. "
            "Write it as e.g. http://localhost:8080, or put the number in the Port field."
        ) from None
    if port and host_port is not None and host_port != port:
        raise DatrisConfigError(
            f"{subject} Host '{host}' names port {host_port} but the Port field says {port}. "
            "Make them agree, or take the port out of Host and keep it in the Port field."
        )
    if parts.path.rstrip("/").endswith(API_PREFIX):
        raise DatrisConfigError(
            f"{subject} Host '{host}' ends in {API_PREFIX}; the provider adds that itself. "
            f"Set Host to '{host[: -len(API_PREFIX)]}'."
        )
    if parts.query or parts.fragment:
        raise DatrisConfigError(f"{subject} Host '{host}' must not hold a query or fragment.")
    if port and host_port is None:
        return urlunsplit((parts.scheme, f"{parts.netloc}:{port}", parts.path, "", ""))
    return host


def _parse_port(value: Any, *, subject: str) -> int | None:
    if value in (None, 0, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise DatrisConfigError(f"{subject} Port must be a number from 1 to 65535, not {value!r}.")
    return value


def _refuse_credentials(url: str, *, subject: str, field_name: str) -> None:
    """Refuse ``user:secret@`` in a URL, naming it only with the secret blanked out.

    The URL would otherwise reach messages, logs and link XComs, where Airflow's secret masker does
    not look; the key has a field of its own that is masked.
    """
    if "@" not in url:
        return
    # A base URL has no other use for "@": whatever comes before the last one may be a secret, even
    # when the secret itself holds "/", "?" or "#".
    scheme, separator, rest = url.partition("://")
    prefix = f"{scheme}://" if separator else ""
    without = (rest if separator else url).rsplit("@", 1)[1]
    cleaned = prefix + without
    raise DatrisConfigError(
        f"{subject} {field_name} has a user name or password in it ({prefix}***@{without}). Datris takes no "
        "user name, and the API key belongs in the connection's Password field (labelled 'API key'), "
        f"where Airflow masks it. Set {field_name} to '{cleaned}'."
    )


def parse_verify(value: Any, ca_bundle: Any = None, *, conn_id: str | None = "datris_default") -> bool | str:
    """Read the ``verify`` extra (a boolean, or one spelled as text) and the ``ca_bundle`` extra (a path).

    ``verify`` may also hold the CA-bundle path itself, as earlier versions of the provider documented.
    """
    subject = connection_subject(conn_id)
    verify = _parse_verify_flag(value, subject=subject)
    if ca_bundle in (None, ""):
        return verify
    if not isinstance(ca_bundle, str):
        raise DatrisConfigError(
            f"{subject} extra 'ca_bundle' must be the path of a CA bundle, not {type(ca_bundle).__name__}."
        )
    if verify is False:
        raise DatrisConfigError(
            f"{subject} turns TLS verification off (extra 'verify': false) but names a CA bundle "
            "(extra 'ca_bundle'). Turn 'verify' on to check the server with the bundle, or clear 'ca_bundle'."
        )
    if isinstance(verify, str) and verify != ca_bundle:
        raise DatrisConfigError(
            f"{subject} names two CA bundles, in extra 'verify' and in extra 'ca_bundle'. Keep 'ca_bundle' "
            "and set 'verify' to true."
        )
    return _existing_bundle(ca_bundle, subject=subject, key="ca_bundle")


def _parse_verify_flag(value: Any, *, subject: str) -> bool | str:
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
        return _existing_bundle(value, subject=subject, key="verify")
    raise DatrisConfigError(
        f"{subject} extra 'verify' must be true or false (with a CA bundle's path in 'ca_bundle'), "
        f"not {type(value).__name__}."
    )


def _existing_bundle(path: str, *, subject: str, key: str) -> str:
    if not os.path.exists(path):
        raise DatrisConfigError(
            f"{subject} extra '{key}' names a CA bundle that does not exist: {path}. "
            "Give the path of a readable CA bundle, or leave it empty to use the system's."
        )
    return path


def parse_timeout(value: Any, *, conn_id: str | None = "datris_default") -> float:
    """Read the ``timeout`` extra (seconds, a positive number)."""
    subject = connection_subject(conn_id)
    if value is None:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise DatrisConfigError(f"{subject} extra 'timeout' must be a number of seconds, not {value!r}.") from None
    if seconds <= 0:
        raise DatrisConfigError(f"{subject} extra 'timeout' must be positive, not {value!r}.")
    return seconds


def parse_retry_policy(extra: dict[str, Any], *, conn_id: str | None = "datris_default") -> RetryPolicy:
    """Read the ``retries`` (repeats after the first try) and ``retry_delay`` (seconds) extras."""
    subject = connection_subject(conn_id)
    default = RetryPolicy()
    retries = extra.get("retries", default.max_attempts - 1)
    delay = extra.get("retry_delay", default.base_delay)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DatrisConfigError(f"{subject} extra 'retries' must be a whole number >= 0, not {retries!r}.")
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay <= 0:
        raise DatrisConfigError(f"{subject} extra 'retry_delay' must be seconds > 0, not {delay!r}.")
    return RetryPolicy(max_attempts=retries + 1, base_delay=float(delay), max_delay=default.max_delay)


def parse_extra(raw: Any, *, conn_id: str | None = "datris_default") -> dict[str, Any]:
    """Read the connection's Extra: JSON text (as Airflow stores it) or an already parsed object."""
    subject = connection_subject(conn_id)
    if raw is None or raw == "":
        return {}
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DatrisConfigError(
                f"{subject} Extra is not valid JSON ({err.msg}, line {err.lineno} column {err.colno}). "
                'Write it as a JSON object, e.g. {"verify": true, "timeout": 30}.'
            ) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DatrisConfigError(
            f"{subject} Extra must be a JSON object, not a JSON {_json_kind(value)}. "
            'Write it as {"key": value, ...}, e.g. {"verify": true, "timeout": 30}, or leave it empty.'
        )
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def settings_from_connection_fields(
    *,
    conn_id: str | None,
    host: str | None,
    password: str | None,
    extra: Any,
    port: int | None = None,
    retry: RetryPolicy | None = None,
) -> ClientSettings:
    """Build checked settings from the fields of an Airflow connection (or anything shaped like one).

    :param conn_id: the connection's id, used in messages; ``None`` to say "This connection".
    :param host: the Host field, the base URL.
    :param password: the Password field, the API key.
    :param extra: the Extra field, as JSON text or an object.
    :param port: the Port field; it goes into the base URL unless Host names the same port.
    :param retry: a retry policy that replaces the ``retries``/``retry_delay`` extras.
    """
    extra = parse_extra(extra, conn_id=conn_id)
    return ClientSettings(
        base_url=normalise_base_url(host, port, conn_id=conn_id),
        api_key=password or None,
        verify=parse_verify(extra.get("verify"), extra.get("ca_bundle"), conn_id=conn_id),
        timeout=parse_timeout(extra.get("timeout"), conn_id=conn_id),
        retry=retry or parse_retry_policy(extra, conn_id=conn_id),
        ui_url=_parse_ui_url(extra.get("ui_url"), conn_id=conn_id),
    )


def _parse_ui_url(value: Any, *, conn_id: str | None) -> str:
    if value in (None, ""):
        return ""
    subject = connection_subject(conn_id)
    _refuse_credentials(str(value), subject=subject, field_name="extra 'ui_url'")
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DatrisConfigError(
            f"{subject} extra 'ui_url' must be the Datris UI's full URL, e.g. https://app.example.com, not {value!r}."
        )
    return str(value).rstrip("/")
