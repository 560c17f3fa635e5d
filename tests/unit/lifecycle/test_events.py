"""The trigger-event contract: what a resuming task accepts, refuses, and how it says so."""

from __future__ import annotations

import pytest

from datris_provider._compat import AirflowFailException
from datris_provider.client.errors import DatrisTransientError, DatrisWaitTimeoutError
from datris_provider.lifecycle.events import (
    SCRIPT_EVENTS,
    WAIT_EVENTS,
    error_payload,
    event_payload,
    read_event,
)

RESUME = {"try_number": 1, "started_at": 0.0}
ROLLUP = {"allDone": True, "status": "success", "jobs": []}


def test_an_event_from_a_newer_version_with_extra_keys_is_read():
    event = {**event_payload("done", RESUME, rollup=ROLLUP), "cursor": [["old", 1]], "added_later": {"x": 1}}

    end = read_event(event, WAIT_EVENTS)

    assert end.status == "done"
    assert end.rollup == ROLLUP


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ({"status": "script_done", "resume": RESUME}, "lacks 'outcome'"),
        ({"status": "done", "resume": {"started_at": 0.0}}, "resume state lacks 'try_number'"),
        ({"status": "done", "resume": RESUME, "rollup": "allDone"}, "'rollup' of type str"),
        ({"status": "done", "rollup": ROLLUP}, "carries no 'resume' state"),
        ({"status": "done", "resume": {"try_number": True}, "rollup": ROLLUP}, "'try_number' of type bool"),
        ("done", "it is str, not a dict"),
    ],
)
def test_an_event_missing_what_this_version_needs_fails_in_words(event, says):
    with pytest.raises(AirflowFailException, match=says) as raised:
        read_event(event, WAIT_EVENTS | SCRIPT_EVENTS)

    assert "clear the task to start it again" in str(raised.value)


def test_a_status_of_the_other_step_is_refused():
    with pytest.raises(AirflowFailException, match="its status is 'done' where this step expects one of error"):
        read_event(event_payload("done", RESUME, rollup=ROLLUP), SCRIPT_EVENTS)


def test_error_events_keep_their_retry_verdict():
    transient = read_event(error_payload(DatrisTransientError("Datris answered 503"), RESUME), WAIT_EVENTS)
    final = read_event(error_payload(DatrisWaitTimeoutError("no job for 300 s"), RESUME), WAIT_EVENTS)

    with pytest.raises(DatrisTransientError, match="503"):
        transient.raise_if_error()
    with pytest.raises(AirflowFailException, match="no job for 300 s"):
        final.raise_if_error()
