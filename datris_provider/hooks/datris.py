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
    from datris_provider.client.api import DatrisClient
    from datris_provider.client.settings import ClientSettings, RetryPolicy


class DatrisHook(BaseHook):
    """Talks to a Datris server described by an Airflow connection of type ``datris``.

    Host is the Datris base URL (without ``/api/v1``); Password is the API key, sent as
    ``x-api-key`` only when set; Extra may hold ``verify`` (true, false or a CA-bundle path) and
    ``timeout`` (seconds for every call except the blocking tap run).

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
        from datris_provider._compat import AirflowNotFoundException
        from datris_provider.client.settings import settings_from_connection_fields

        try:
            conn = self.get_connection(self.datris_conn_id)
        except AirflowNotFoundException:
            raise DatrisConfigError(
                f"The Airflow connection '{self.datris_conn_id}' is not defined. Create a connection of type "
                f"'datris' with that id (UI, CLI, or the AIRFLOW_CONN_{self.datris_conn_id.upper()} variable)."
            ) from None
        if conn.password:
            from airflow.sdk.log import mask_secret

            mask_secret(conn.password)
        extra = conn.extra_dejson
        if not isinstance(extra, dict):
            raise DatrisConfigError(f"The connection '{self.datris_conn_id}' Extra must be a JSON object.")
        settings = settings_from_connection_fields(
            conn_id=self.datris_conn_id,
            host=conn.host,
            password=conn.password,
            extra=extra,
            retry=self._retry,
        )
        for warning in settings.warnings():
            self.log.warning(warning)
        return settings

    @classmethod
    async def aget_settings(cls, datris_conn_id: str, *, retry: RetryPolicy | None = None) -> ClientSettings:
        """The connection's settings, looked up without blocking the event loop (for triggers)."""
        from datris_provider._compat import AirflowNotFoundException
        from datris_provider.client.settings import settings_from_connection_fields

        try:
            if hasattr(BaseHook, "aget_connection"):
                conn = await BaseHook.aget_connection(datris_conn_id)
            else:  # Airflow < 3.1
                from asgiref.sync import sync_to_async

                conn = await sync_to_async(BaseHook.get_connection)(datris_conn_id)
        except AirflowNotFoundException:
            raise DatrisConfigError(f"The Airflow connection '{datris_conn_id}' is not defined.") from None
        if conn.password:
            from airflow.sdk.log import mask_secret

            mask_secret(conn.password)
        extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
        return settings_from_connection_fields(
            conn_id=datris_conn_id, host=conn.host, password=conn.password, extra=extra, retry=retry
        )

    @cached_property
    def client(self) -> DatrisClient:
        """An API client for this connection (one HTTP session, reused)."""
        from datris_provider.client.api import DatrisClient

        return DatrisClient(self.settings)

    def get_conn(self) -> DatrisClient:
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        """Check that Datris answers (``/version``) and accepts the key, changing nothing."""
        try:
            version = self.client.get_version()
            key_check = self.client.check_key()
        except DatrisError as err:
            return False, str(err)
        return True, f"Datris {version.version} answered at {self.settings.base_url}; {key_check}."
