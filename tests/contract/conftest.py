"""One backend for the contract suite: the stand-in by default, a live Datris when the environment names one.

Against a live server set ``DATRIS_CONTRACT_URL`` (the base URL, without ``/api/v1``) and
``DATRIS_CONTRACT_API_KEY``; the tests that run a tap also need ``DATRIS_CONTRACT_TAP``, a tap whose
``mode=run`` may be triggered (it is run a few times). Without them the live half is skipped.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import requests

from datris_provider.testing import StandInDatris

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

LIVE_URL = "DATRIS_CONTRACT_URL"
LIVE_KEY = "DATRIS_CONTRACT_API_KEY"
LIVE_TAP = "DATRIS_CONTRACT_TAP"

STAND_IN_TAP = "contract_tap"
# The server's debounce window: a run of the same tap within it is answered "debounced".
DEBOUNCE_SECONDS = 5.0
# A live tap script may block the run call for a long time; the stand-in answers at once.
LIVE_RUN_TIMEOUT = 3900.0
LIVE_JOB_TIMEOUT = 900.0


@dataclass
class Backend:
    """A Datris API to check the contract against.

    :param name: ``stand_in`` or ``live``.
    :param api_url: the base URL with ``/api/v1``.
    :param api_key: the key sent as ``x-api-key`` (never printed).
    :param tap: a tap the suite may run, or None (the tests that run one skip).
    """

    name: str
    api_url: str
    api_key: str | None = field(default=None, repr=False)
    tap: str | None = None
    run_timeout: float = 60.0
    job_timeout: float = 60.0
    pass_time: Callable[[float], None] | None = field(default=None, repr=False)
    _last_run_started: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key} if self.api_key else {}

    def get(self, path: str, **params: str) -> requests.Response:
        return requests.get(self.api_url + path, params=params, headers=self.headers, timeout=60)

    def post(self, path: str, body: dict[str, Any], timeout: float = 60.0) -> requests.Response:
        return requests.post(self.api_url + path, json=body, headers=self.headers, timeout=timeout)

    def runnable_tap(self) -> str:
        if self.tap is None:
            pytest.skip(f"set {LIVE_TAP} to a tap this suite may run on the live Datris")
        return self.tap

    def leave_debounce_window(self) -> None:
        """Wait until a run of the tap is accepted again; the run about to be posted starts a new window.

        A live server keeps its debounce between tests (the window is the server's rule, 5 s from the
        start of the last accepted run); the stand-in is reset before each test.
        """
        with self._lock:
            wait = self._last_run_started + DEBOUNCE_SECONDS + 0.5 - time.monotonic()
            if self.name == "live" and wait > 0:
                time.sleep(wait)
            self._last_run_started = time.monotonic()

    def run_tap(self) -> dict[str, Any]:
        """One accepted ``mode=run`` of the tap."""
        tap = self.runnable_tap()
        self.leave_debounce_window()
        answer = self.post("/tap/run", {"name": tap, "mode": "run"}, timeout=self.run_timeout)
        assert answer.status_code == 200, answer.text[:500]
        body: dict[str, Any] = answer.json()
        return body

    def wait_for(self, what: str, read: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
        """Poll ``read`` until ``done`` holds (at most ``job_timeout`` seconds of the server's time).

        The stand-in's clock is manual: it moves one second per poll, so nothing depends on real time.
        """
        waited = 0.0
        while True:
            value = read()
            if done(value):
                return value
            if waited > self.job_timeout:
                raise AssertionError(f"{what} did not happen within {self.job_timeout} s; last seen: {value!r}")
            if self.pass_time is not None:
                self.pass_time(1.0)
                waited += 1.0
            else:
                time.sleep(2.0)
                waited += 2.0


@pytest.fixture(scope="session")
def _contract_stand_in() -> Iterator[StandInDatris]:
    with StandInDatris(clock="manual") as stand_in:
        yield stand_in


@pytest.fixture(params=["stand_in", "live"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The stand-in (always) and a live Datris (when the environment names one)."""
    if request.param == "live":
        url, key = os.environ.get(LIVE_URL), os.environ.get(LIVE_KEY)
        if not url or not key:
            pytest.skip(f"set {LIVE_URL} and {LIVE_KEY} to check a live Datris")
        yield _live_backend(request, url.rstrip("/").removesuffix("/api/v1"), key)
        return
    stand_in: StandInDatris = request.getfixturevalue("_contract_stand_in")
    stand_in.reset_state()
    stand_in.add_tap(name=STAND_IN_TAP, records=3, target_pipeline="contract_orders")
    yield Backend(name="stand_in", api_url=stand_in.api_url, tap=STAND_IN_TAP, pass_time=stand_in.clock.advance)
    stand_in.clock.advance(3600)  # whatever a test started ends before the next one resets
    stand_in.wait_until_idle()


def _live_backend(request: pytest.FixtureRequest, url: str, key: str) -> Backend:
    # One object per session, so the debounce spacing holds across tests.
    cache = request.config.stash.setdefault(_LIVE_BACKEND, {})
    if "backend" not in cache:
        cache["backend"] = Backend(
            name="live",
            api_url=url + "/api/v1",
            api_key=key,
            tap=os.environ.get(LIVE_TAP) or None,
            run_timeout=LIVE_RUN_TIMEOUT,
            job_timeout=LIVE_JOB_TIMEOUT,
        )
    backend: Backend = cache["backend"]
    return backend


_LIVE_BACKEND = pytest.StashKey[dict[str, Backend]]()
