"""The publisher tokens an upload's tries use where Airflow keeps no task state."""

from __future__ import annotations

from types import SimpleNamespace

from datris_provider.lifecycle.upload_tokens import UploadTokens

RETRIES = 2


def _tokens(try_number: int, max_tries: int = RETRIES, *, start: str = "2026-05-01T00:00:00", clears: int = 0, **ti):
    identity = {"dag_id": "d", "run_id": "r", "task_id": "upload", "map_index": -1, **ti}
    context = {
        "ti": SimpleNamespace(try_number=try_number, max_tries=max_tries, **identity),
        "dag_run": SimpleNamespace(start_date=start, clear_number=clears),
    }
    return UploadTokens.of(context, try_number=try_number, retries=RETRIES)


def test_a_retry_knows_the_tokens_of_the_tries_before_it_newest_first():
    first, second, third = _tokens(1), _tokens(2), _tokens(3)

    assert first.earlier() == []
    assert second.earlier() == [first.current]
    assert third.earlier() == [second.current, first.current]
    assert len({first.current, second.current, third.current}) == 3


def test_each_task_instance_and_each_run_has_its_own_series():
    base = _tokens(1).current
    others = [
        _tokens(1, map_index=0),
        _tokens(1, run_id="other"),
        _tokens(1, task_id="other"),
        _tokens(1, start="2026-05-02T00:00:00"),  # the run was deleted and made again under the same id
        _tokens(1, clears=1),  # the whole run was cleared
    ]
    assert base not in {tokens.current for tokens in others}
    assert _tokens(1).current == base


def test_clearing_a_finished_task_starts_a_series_that_follows_nothing_from_before_it():
    # Cleared after try 3 failed: max_tries becomes 3 + retries, and the next try is 4.
    after_clear = _tokens(4, max_tries=3 + RETRIES)
    before_clear = {_tokens(n).current for n in (1, 2, 3)}

    assert after_clear.earlier() == []
    assert after_clear.current not in before_clear
    assert _tokens(5, max_tries=3 + RETRIES).earlier() == [after_clear.current]
