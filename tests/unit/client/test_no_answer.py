"""A call that gets no HTTP answer is explained in plain words, naming the URL and port it tried."""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx
import pytest
import requests

from datris_provider.client.api import DatrisClient
from datris_provider.client.async_api import AsyncDatrisClient
from datris_provider.client.errors import DatrisRunCallInterrupted, DatrisTransientError
from datris_provider.client.no_answer import explain_no_answer
from datris_provider.client.settings import RetryPolicy, settings_from_connection_fields


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(port: int):
    settings = settings_from_connection_fields(
        conn_id="datris_default", host="http://127.0.0.1", port=port, password=None, extra={"timeout": 2}
    )
    return settings.__class__(**{**settings.__dict__, "retry": RetryPolicy(max_attempts=1)})


def test_a_refused_port_reads_in_plain_words_with_the_port(closed_port):
    client = DatrisClient(_settings(closed_port), sleep=lambda _: None)
    with pytest.raises(DatrisTransientError) as err:
        client.get_version()
    assert str(err.value) == (
        f"Nothing is listening at http://127.0.0.1:{closed_port}: the connection was refused "
        "(GET /api/v1/version). Check the connection's Host and Port, and that Datris is running."
    )


def test_a_refused_port_reads_the_same_on_the_async_client(closed_port):
    async def version() -> None:
        client = AsyncDatrisClient(_settings(closed_port))
        try:
            await client.get_version()
        finally:
            await client.aclose()

    with pytest.raises(DatrisTransientError) as err:
        asyncio.run(version())
    assert str(err.value).startswith(f"Nothing is listening at http://127.0.0.1:{closed_port}: the connection was")


def test_a_run_call_that_could_not_connect_names_the_url(closed_port):
    client = DatrisClient(_settings(closed_port), sleep=lambda _: None)
    with pytest.raises(DatrisRunCallInterrupted) as err:
        client.run_tap("orders", {}, script_limit_seconds=5)
    assert f"Nothing is listening at http://127.0.0.1:{closed_port}" in str(err.value)


def _explain(err: BaseException) -> str:
    return explain_no_answer(err, endpoint="https://datris.example.com:443", route="GET /api/v1/tap", timeout=30)


def _wrapped(inner: BaseException, outer: type[BaseException]) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as cause:
            raise outer("wrapped") from cause
    except BaseException as err:
        return err


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (
            _wrapped(socket.gaierror(-2, "Name or service not known"), requests.exceptions.ConnectionError),
            "The host name in https://datris.example.com:443 could not be resolved (GET /api/v1/tap). "
            "Check the connection's Host.",
        ),
        (
            _wrapped(ssl.SSLCertVerificationError(1, "certificate verify failed"), httpx.ConnectError),
            "The TLS handshake with https://datris.example.com:443 failed (GET /api/v1/tap)",
        ),
        (
            requests.exceptions.ConnectTimeout("slow"),
            "https://datris.example.com:443 did not accept a connection within 30 s (GET /api/v1/tap).",
        ),
        (
            httpx.ReadTimeout("slow"),
            "https://datris.example.com:443 took the call but sent no answer within 30 s (GET /api/v1/tap). "
            "If Datris is only slow, raise the connection's extra 'timeout'.",
        ),
        (
            _wrapped(ConnectionResetError(104, "reset"), requests.exceptions.ConnectionError),
            "https://datris.example.com:443 closed the connection before answering (GET /api/v1/tap).",
        ),
        (
            requests.exceptions.ChunkedEncodingError("odd"),
            "GET /api/v1/tap got no answer from https://datris.example.com:443 (ChunkedEncodingError).",
        ),
    ],
)
def test_each_kind_of_no_answer_is_said_plainly(err, expected):
    assert _explain(err).startswith(expected)


def test_a_kill_that_reached_nobody_names_the_url(closed_port):
    client = DatrisClient(_settings(closed_port), sleep=lambda _: None)
    answer = client.kill_job("00000000-0000-0000-0000-000000000000", timeout=0.2)
    assert not answer.answered
    assert answer.detail.startswith(f"Nothing is listening at http://127.0.0.1:{closed_port}")
