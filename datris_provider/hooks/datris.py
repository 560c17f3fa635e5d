"""The Datris hook: reads the Airflow connection once and hands out an API client."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

try:  # Airflow 3.1+
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

from datris_provider.client.errors import DatrisConfigError, DatrisError

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from datris_provider.client.api import DatrisClient
    from datris_provider.client.models import ServerVersion
    from datris_provider.client.settings import ClientSettings, RetryPolicy


class DatrisHook(BaseHook):
    """Talks to a Datris server described by an Airflow connection of type ``datris``.

    Host is the Datris base URL (without ``/api/v1``); Port, when set, goes into it; Password is the
    API key, sent as ``x-api-key`` only when set; Extra may hold ``verify`` (true or false),
    ``ca_bundle`` (the path of a CA bundle to verify the server with), ``timeout`` (seconds for
    every call except the blocking tap run), ``retries``, ``retry_delay`` and ``ui_url``.

    :param datris_conn_id: the Airflow connection to use.
    :param retry: how calls that are safe to repeat are repeated; the default suits most servers.
    """

    conn_name_attr = "datris_conn_id"
    default_conn_name = "datris_default"
    conn_type = "datris"
    hook_name = "Datris"

    def __init__(self, datris_conn_id: str = default_conn_name, *, retry: RetryPolicy | None = None) -> None:
        super().__init__()
        self.datris_conn_id = datris_conn_id
        self._retry = retry

    @cached_property
    def settings(self) -> ClientSettings:
        """The connection, read once and checked."""
        return self._settings_from(self._connection(), self.datris_conn_id)

    def _connection(self) -> Connection:
        """The Airflow connection, its key registered with the secret masker."""
        from datris_provider._compat import AirflowNotFoundException

        try:
            conn = self.get_connection(self.datris_conn_id)
        except AirflowNotFoundException:
            raise _not_defined(self.datris_conn_id) from None
        if conn.password:
            from airflow.sdk.log import mask_secret

            mask_secret(conn.password)
        return conn

    @classmethod
    async def aget_settings(cls, datris_conn_id: str, *, retry: RetryPolicy | None = None) -> ClientSettings:
        """The connection's settings, looked up without blocking the event loop (for triggers).

        Checked and warned about exactly as :attr:`settings` does.
        """
        from datris_provider._compat import AirflowNotFoundException

        hook = cls(datris_conn_id, retry=retry)
        try:
            if hasattr(BaseHook, "aget_connection"):
                conn = await BaseHook.aget_connection(datris_conn_id)
            else:  # Airflow < 3.1
                from asgiref.sync import sync_to_async

                conn = await sync_to_async(BaseHook.get_connection)(datris_conn_id)
        except AirflowNotFoundException:
            raise _not_defined(datris_conn_id) from None
        if conn.password:
            await _amask_secret(conn.password)
        return hook._settings_from(conn, datris_conn_id)

    def _settings_from(self, conn: Connection, conn_id: str | None) -> ClientSettings:
        """The one reader of a connection's fields, for the sync and the async path.

        :param conn_id: how messages name the connection; ``None`` for "This connection".
        """
        from datris_provider.client.settings import settings_from_connection_fields

        settings = settings_from_connection_fields(
            conn_id=conn_id,
            host=conn.host,
            port=conn.port,
            password=conn.password,
            extra=conn.extra,
            retry=self._retry,
        )
        for warning in settings.warnings():
            self.log.warning(warning)
        return settings

    @cached_property
    def client(self) -> DatrisClient:
        """An API client for this connection (one HTTP session, reused)."""
        from datris_provider.client.api import DatrisClient

        return DatrisClient(self.settings)

    def get_conn(self) -> DatrisClient:
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        """Check that Datris answers (``/version``) and accepts the key, changing nothing.

        The messages name the connection as "This connection": Airflow's Test button runs the hook
        under a throw-away connection id that would mean nothing to the user.
        """
        from datris_provider.client.api import DatrisClient

        try:
            settings = self._settings_from(self._connection(), None)
            client = DatrisClient(settings)
            try:
                version = client.get_version()
                key_check = _key_check(client, version, sent_a_key=settings.api_key is not None)
            finally:
                client.close()
        except DatrisError as err:
            return False, str(err)
        return True, f"Datris {version.version} answered at {settings.endpoint}; {key_check}."


def _key_check(client: DatrisClient, version: ServerVersion, *, sent_a_key: bool) -> str:
    """What is true about the key, checked where the server checks keys."""
    if version.use_api_keys is False:
        if sent_a_key:
            return "this Datris does not use API keys (useApiKeys is false), so the key is not checked"
        return "this Datris does not use API keys (useApiKeys is false), so none is needed"
    route = client.check_key()
    if not sent_a_key:
        return f"no API key is set, and Datris answered {route} without one"
    return f"the API key is accepted ({route})"


def _not_defined(conn_id: str) -> DatrisConfigError:
    return DatrisConfigError(
        f"The Airflow connection '{conn_id}' is not defined. Create a connection of type "
        f"'datris' with that id (UI, CLI, or the AIRFLOW_CONN_{conn_id.upper()} variable)."
    )


async def _amask_secret(secret: str) -> None:
    try:  # Task SDK 1.1+: masks without a blocking call to the supervisor from the event loop
        from airflow.sdk.log import amask_secret
    except ImportError:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
    else:
        await amask_secret(secret)
