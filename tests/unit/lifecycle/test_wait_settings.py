"""The wait arguments, checked once for every operator and the sensor, and the deadline policy."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from datris_provider.lifecycle.settings import WaitSettings


def test_numbers_and_timedeltas_are_the_same_seconds():
    assert WaitSettings.checked(poll_interval=timedelta(seconds=30), no_job_timeout=timedelta(minutes=1)) == (
        WaitSettings.checked(poll_interval=30, no_job_timeout=60)
    )


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"poll_interval": 0}, "poll_interval must be more than zero seconds"),
        ({"timeout": -5}, "timeout must be zero or more seconds"),
        ({"no_job_timeout": "60"}, "no_job_timeout must be a number of seconds or a timedelta, not str"),
        ({"max_poll_failures": 1.5}, "max_poll_failures must be a whole number"),
    ],
)
def test_bad_wait_arguments_say_what_to_fix(arguments, says):
    with pytest.raises((TypeError, ValueError), match=says):
        WaitSettings.checked(**arguments)


def test_the_deadline_is_the_earlier_of_timeout_and_execution_timeout_from_the_task_start():
    started = datetime.now(timezone.utc) - timedelta(minutes=50)
    context = {"ti": SimpleNamespace(start_date=started)}

    by_execution_timeout = WaitSettings.checked(timeout=timedelta(hours=2)).deadline_at(context, timedelta(hours=1))
    by_timeout = WaitSettings.checked(timeout=60).deadline_at(context, timedelta(hours=1))

    assert by_execution_timeout == pytest.approx((started + timedelta(hours=1)).timestamp())
    assert by_timeout is not None and by_timeout < by_execution_timeout


def test_the_sensor_takes_a_timedelta_no_job_timeout():
    from datris_provider.sensors.pipeline import DatrisPipelineSensor

    sensor = DatrisPipelineSensor(task_id="wait", publisher_token="t", no_job_timeout=timedelta(seconds=60))

    assert sensor.wait_settings.no_job_timeout == 60.0
