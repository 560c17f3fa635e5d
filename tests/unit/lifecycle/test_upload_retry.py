"""Which earlier upload a retried upload follows, and when it sends the file again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from datris_provider.client.errors import DatrisTransientError
from datris_provider.client.models import PipelineJob, Rollup
from datris_provider.lifecycle.upload import UploadTask, _follow_earlier_upload

NEWEST, OLDER = "token-try-2", "token-try-1"


def _rollup(*statuses: str) -> Rollup:
    jobs = tuple(PipelineJob(pipeline_token=f"job-{n}", pipeline="orders", status=s) for n, s in enumerate(statuses))
    done = all(status in ("success", "warning", "error", "timed_out") for status in statuses)
    status = "error" if "error" in statuses else ("success" if done else "processing")
    return Rollup(all_done=done, status=status, jobs=jobs)


class Datris:
    """Answers the status of each publisher token; a token mapped to an exception fails its reads."""

    def __init__(self, answers):
        self.answers = answers
        self.reads: list[str] = []

    def get_pipeline_status(self, token):
        self.reads.append(token)
        answer = self.answers.get(token, _rollup())
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(rollup=answer)


def _follow(answers, *, publisher_token=None, no_job_timeout=0.2):
    datris = Datris(answers)
    said: list[str] = []
    sleeps: list[float] = []
    listener = SimpleNamespace(info=said.append, warning=said.append)
    task = UploadTask(
        hook=SimpleNamespace(client=datris), listener=listener, ledger=None, signal=SimpleNamespace(sleep=sleeps.append)
    )
    operator = SimpleNamespace(
        publisher_token=publisher_token,
        wait_settings=SimpleNamespace(no_job_timeout=no_job_timeout, poll_interval=0.05),
    )
    followed = _follow_earlier_upload(operator, task, [NEWEST, OLDER])
    return followed, task, datris, said, sleeps


def test_the_newest_upload_with_jobs_is_followed_without_waiting():
    followed, task, datris, _, sleeps = _follow({OLDER: _rollup("processing")})

    assert followed == OLDER
    assert task.pipeline_tokens == ("job-0",)
    assert datris.reads == [NEWEST, OLDER]
    assert sleeps == []


def test_an_upload_that_loaded_nothing_is_sent_again_once_no_newer_try_shows_jobs():
    followed, _, datris, said, sleeps = _follow({OLDER: _rollup("error")})

    assert followed is None
    assert datris.reads.count(NEWEST) > 1  # the newest try may still have been sending: waited for
    assert sleeps
    assert any("loaded nothing; this retry sends the file again" in line for line in said)


def test_an_upload_that_loaded_part_of_its_jobs_is_followed_not_sent_twice():
    followed, task, *_ = _follow({NEWEST: _rollup("success", "error")})

    assert followed == NEWEST
    assert task.pipeline_tokens == ("job-0", "job-1")


def test_with_the_users_own_token_a_failed_upload_is_followed_not_sent_under_it_again():
    followed, *_ = _follow({NEWEST: _rollup("error")}, publisher_token=NEWEST)

    assert followed == NEWEST


def test_an_earlier_token_that_cannot_be_read_fails_the_try_instead_of_sending_again():
    with pytest.raises(DatrisTransientError, match="not sent again while that is unknown"):
        _follow({NEWEST: DatrisTransientError("HTTP 503")})


def test_nothing_on_datris_for_any_earlier_token_sends_the_file():
    followed, _, datris, said, _ = _follow({})

    assert followed is None
    assert set(datris.reads) == {NEWEST, OLDER}
    assert any("never reached it" in line for line in said)
