"""The publisher tokens an upload's tries use where Airflow keeps no task state."""

from __future__ import annotations

from types import SimpleNamespace

from datris_provider.lifecycle.upload_tokens import derived_token, earlier_tokens


def _ti(try_number: int, max_tries: int, **names: object) -> SimpleNamespace:
    identity = {"dag_id": "d", "run_id": "r", "task_id": "upload", "map_index": -1, **names}
    return SimpleNamespace(try_number=try_number, max_tries=max_tries, **identity)


def test_a_retry_knows_the_tokens_of_the_tries_before_it_newest_first():
    retries = 2
    first, second, third = (_ti(n, max_tries=retries) for n in (1, 2, 3))

    assert earlier_tokens(first, retries) == []
    assert earlier_tokens(second, retries) == [derived_token(first, 1)]
    assert earlier_tokens(third, retries) == [derived_token(second, 2), derived_token(first, 1)]


def test_each_try_and_each_task_instance_has_its_own_token():
    tokens = {
        derived_token(_ti(1, 2), 1),
        derived_token(_ti(2, 2), 2),
        derived_token(_ti(1, 2, map_index=0), 1),
        derived_token(_ti(1, 2, run_id="other"), 1),
        derived_token(_ti(1, 2, task_id="other"), 1),
    }
    assert len(tokens) == 5
    assert derived_token(_ti(1, 2), 1) == derived_token(_ti(1, 2), 1)


def test_a_clear_starts_a_fresh_series_that_follows_no_upload_from_before_it():
    retries = 2
    # Cleared after try 3 failed: max_tries becomes 3 + retries, and the next try is 4.
    after_clear = _ti(4, max_tries=3 + retries)
    before_clear = {derived_token(_ti(n, max_tries=retries), n) for n in (1, 2, 3)}

    assert earlier_tokens(after_clear, retries) == []
    assert derived_token(after_clear, 4) not in before_clear
    assert earlier_tokens(_ti(5, max_tries=3 + retries), retries) == [derived_token(after_clear, 4)]
