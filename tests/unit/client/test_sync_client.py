"""The API client against the stand-in Datris: typed answers, both error generations, safe repeats."""

from __future__ import annotations

import pytest

from datris_provider.client.api import DatrisClient
from datris_provider.client.errors import (
    DatrisApiError,
    DatrisAuthError,
    DatrisProtocolError,
    DatrisRunCallInterrupted,
    DatrisTransientError,
)
from datris_provider.client.responses import first_line_of_error
from datris_provider.client.settings import ClientSettings, RetryPolicy
from datris_provider.testing import StandInTap
from datris_provider.version import __version__

KEY = "dk_live_0123456789abcdef"


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def _client(stand_in, sleeps, *, api_key=None, attempts=4) -> DatrisClient:
    settings = ClientSettings(
        base_url=stand_in.url, api_key=api_key, retry=RetryPolicy(max_attempts=attempts, base_delay=0.5)
    )
    return DatrisClient(settings, sleep=sleeps, jitter=lambda: 1.0)


@pytest.fixture
def client(datris_stand_in, sleeps) -> DatrisClient:
    datris_stand_in.add_tap(StandInTap(name="orders", records=5))
    datris_stand_in.add_tap(StandInTap(name="cron_tap", cron="0 0 6 * * ?"))
    return _client(datris_stand_in, sleeps)


def test_version_gives_the_run_script_limit(client, datris_stand_in):
    assert client.get_version().run_script_limit_seconds == 3600
    datris_stand_in.tap_run_timeout_seconds = 7200
    assert client.get_version().run_script_limit_seconds == 7200
    # Older servers report no limit: wait as long as the newest default rather than cut a run short.
    datris_stand_in.legacy_version = True
    assert client.get_version().run_script_limit_seconds == 3600


def test_tap_config_is_typed(client):
    tap = client.get_tap("orders")
    assert (tap.name, tap.target_pipeline, tap.scheduled_by_datris) == ("orders", "orders", False)
    assert client.get_tap("cron_tap").scheduled_by_datris


def test_user_agent_names_the_package_and_no_key_header_without_a_key(client, datris_stand_in):
    client.get_version()
    (call,) = datris_stand_in.calls("GET /version")
    assert call.headers["user-agent"] == f"airflow-provider-datris/{__version__}"
    assert "x-api-key" not in call.headers


def test_key_is_sent_when_set(datris_stand_in, sleeps):
    datris_stand_in.require_api_keys()
    datris_stand_in.add_api_key(KEY, label="airflow")
    datris_stand_in.add_tap(StandInTap(name="orders"))
    assert _client(datris_stand_in, sleeps, api_key=KEY).get_tap("orders").name == "orders"


@pytest.mark.parametrize("style", ["json", "stacktrace"])
def test_missing_key_says_to_set_the_password(datris_stand_in, sleeps, style):
    datris_stand_in.error_style = style
    datris_stand_in.require_api_keys()
    datris_stand_in.add_tap(StandInTap(name="orders"))
    with pytest.raises(DatrisAuthError, match="set the connection's password"):
        _client(datris_stand_in, sleeps).get_tap("orders")


def test_bad_key_says_to_check_it_and_never_shows_it(datris_stand_in, sleeps):
    datris_stand_in.require_api_keys()
    datris_stand_in.add_tap(StandInTap(name="orders"))
    with pytest.raises(DatrisAuthError) as err:
        _client(datris_stand_in, sleeps, api_key=KEY).get_tap("orders")
    assert "unknown, revoked or mistyped" in str(err.value)
    assert KEY not in str(err.value)


def test_missing_capability_names_it_and_what_a_key_needs(datris_stand_in, sleeps):
    datris_stand_in.require_api_keys()
    datris_stand_in.add_api_key(KEY, label="airflow", capabilities=["tap:run"])
    datris_stand_in.add_tap(StandInTap(name="orders"))
    with pytest.raises(DatrisAuthError) as err:
        _client(datris_stand_in, sleeps, api_key=KEY).get_tap("orders")
    message = str(err.value)
    assert "'tap:read'" in message
    assert "tap:read, tap:run, job:read and job:kill" in message
    assert KEY not in message


def test_key_store_down_is_repeated_then_explained(datris_stand_in, sleeps):
    datris_stand_in.require_api_keys()
    datris_stand_in.add_api_key(KEY, label="airflow")
    datris_stand_in.key_store_down()
    datris_stand_in.add_tap(StandInTap(name="orders"))
    with pytest.raises(DatrisTransientError, match="API-key store"):
        _client(datris_stand_in, sleeps, api_key=KEY, attempts=2).get_tap("orders")
    assert len(datris_stand_in.calls("GET /tap")) == 2


@pytest.mark.parametrize("style", ["json", "stacktrace"])
def test_unknown_tap_shows_the_servers_first_line(datris_stand_in, sleeps, style):
    datris_stand_in.error_style = style
    with pytest.raises(DatrisApiError) as err:
        _client(datris_stand_in, sleeps).get_tap("nope")
    assert err.value.status_code == 500
    assert str(err.value).endswith("Tap: nope not found")


def test_429_honours_retry_after(client, datris_stand_in, sleeps):
    datris_stand_in.fail("GET /tap", 429, times=2, headers={"Retry-After": "7"})
    assert client.get_tap("orders").name == "orders"
    assert sleeps == [7.0, 7.0]


def test_5xx_and_resets_are_repeated_with_growing_backoff(client, datris_stand_in, sleeps):
    datris_stand_in.fail("GET /tap", 503)
    datris_stand_in.reset("GET /tap")
    datris_stand_in.html("GET /tap", 502)
    assert client.get_tap("orders").name == "orders"
    assert sleeps == [0.5, 1.0, 2.0]


def test_repeats_are_bounded(client, datris_stand_in, sleeps):
    datris_stand_in.fail("GET /tap", 504, times=10)
    with pytest.raises(DatrisTransientError, match="HTTP 504"):
        client.get_tap("orders")
    assert len(datris_stand_in.calls("GET /tap")) == 4


def test_non_json_200_fails_closed(client, datris_stand_in):
    datris_stand_in.garbage("GET /tap", body='{"name": "orders", "enab')
    with pytest.raises(DatrisProtocolError, match="not JSON"):
        client.get_tap("orders")


def test_html_error_page_is_named(client, datris_stand_in):
    datris_stand_in.html("GET /tap", 404)
    with pytest.raises(DatrisApiError, match="HTML error page"):
        client.get_tap("orders")


def test_run_call_is_never_repeated(client, datris_stand_in):
    datris_stand_in.reset("POST /tap/run")
    with pytest.raises(DatrisRunCallInterrupted):
        client.run_tap("orders", {}, script_limit_seconds=10)
    datris_stand_in.proxy_timeout("POST /tap/run")
    with pytest.raises(DatrisRunCallInterrupted, match="HTTP 504"):
        client.run_tap("orders", {}, script_limit_seconds=10)
    assert len(datris_stand_in.calls("POST /tap/run")) == 2


def test_run_answer_is_typed(client):
    answer = client.run_tap("orders", {"since": "2026-05-01"}, script_limit_seconds=10)
    assert (answer.status, answer.persisted, answer.record_count) == ("success", True, 5)
    assert answer.publisher_token and len(answer.pipeline_tokens) == 1
    assert "[wrapper]" in (answer.logs or "")


def test_kill_of_a_job_that_is_not_running_is_an_answer_not_an_error(client):
    answer = client.kill_job("00000000-0000-0000-0000-000000000000", timeout=2)
    assert not answer.killed
    assert "Job not found" in answer.detail


def test_key_check_falls_back_to_taps_on_older_servers(client, datris_stand_in):
    assert client.check_key() == "GET /api/v1/mcp/tools"
    datris_stand_in.has_mcp_tools = False
    assert client.check_key() == "GET /api/v1/taps"
    assert [call.route for call in datris_stand_in.requests] == ["GET /mcp/tools", "GET /mcp/tools", "GET /taps"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"error":"Authentication required"}', "Authentication required"),
        ("ai.datris.model.DatrisException: Tap: foo not found\n\tat ai.datris.X(X.scala:1)", "Tap: foo not found"),
        ("<html><body>502 Bad Gateway</body></html>", "an HTML error page (from a proxy in front of Datris?)"),
        ("", "empty answer"),
        ("plain words: with colon", "plain words: with colon"),
    ],
)
def test_error_bodies_of_every_generation(body, expected):
    assert first_line_of_error(body)[0] == expected


class TaskTimeout(BaseException):
    """What Airflow's execution_timeout raises inside a running call."""


def test_a_call_interrupted_mid_request_leaves_no_trace_of_the_key_in_its_traceback():
    import traceback

    import requests

    class Interrupted(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            headers = dict(request.headers)  # as urllib3's frames hold them when a signal lands
            assert headers["x-api-key"] == KEY
            raise TaskTimeout("Timeout, PID: 1")

    client = DatrisClient(ClientSettings(base_url="http://datris.invalid", api_key=KEY))
    client._session.mount("http://", Interrupted())

    with pytest.raises(TaskTimeout) as caught:
        client.get_version()

    rendered = "".join(traceback.TracebackException.from_exception(caught.value, capture_locals=True).format())
    assert "Timeout, PID: 1" in rendered
    assert KEY not in rendered
