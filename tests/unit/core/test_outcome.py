from __future__ import annotations

import pytest

from datris_provider.client.errors import DatrisProtocolError, DatrisRunFailedError
from datris_provider.client.models import JobError, PipelineJob, Rollup, RunLogEntry, TapRunResponse
from datris_provider.core.outcome import ScriptOutcome, judge_rollup, judge_script, rollup_is_done


def _response(**fields) -> ScriptOutcome:
    body = {"tap": "t", "status": "success", "mode": "run", "persisted": True, "recordCount": 3, **fields}
    return ScriptOutcome.from_response(TapRunResponse.parse(body))


def test_persisted_run_with_token_is_tracked():
    verdict = judge_script("t", _response(publisherToken="p", pipelineTokens=["j"]))
    assert verdict.track and verdict.final_status == "success" and verdict.warning is None


def test_failure_raises_with_the_server_error():
    with pytest.raises(DatrisRunFailedError, match="script timed out"):
        judge_script("t", _response(status="failure", persisted=False, error="script timed out"))


@pytest.mark.parametrize("reason", ["debounced", "already_running"])
def test_skips_succeed_with_a_warning(reason):
    verdict = judge_script("t", _response(status="skipped", persisted=False, persistedReason=reason))
    assert not verdict.track and verdict.final_status == reason and "skipped" in (verdict.warning or "")


def test_unknown_skip_reason_fails_closed():
    with pytest.raises(DatrisProtocolError):
        judge_script("t", _response(status="skipped", persisted=False, persistedReason="sleepy"))


@pytest.mark.parametrize("reason", ["no_records", "no_target_pipeline"])
def test_nothing_loaded_warns(reason):
    verdict = judge_script("t", _response(persisted=False, persistedReason=reason))
    assert verdict.final_status == reason and "No data was loaded" in (verdict.warning or "")


def test_test_mode_answer_to_a_run_request_fails_closed():
    with pytest.raises(DatrisProtocolError, match="test mode"):
        judge_script("t", _response(persisted=False, persistedReason="test_mode"))


def test_unexplained_not_persisted_fails():
    with pytest.raises(DatrisRunFailedError):
        judge_script("t", _response(persisted=False, persistedReason="unknown"))


def test_persisted_without_token_means_nothing_new():
    verdict = judge_script("t", _response())
    assert not verdict.track and verdict.final_status == "nothing_new"


def test_unknown_run_status_is_refused_at_the_boundary():
    with pytest.raises(DatrisProtocolError, match="refusing to guess"):
        _response(status="cancelled")


def _job(status: str, token: str = "j1", error: JobError | None = None) -> PipelineJob:
    return PipelineJob(token, "orders", status, last_error=error)


def test_rollup_done_needs_every_expected_job():
    rollup = Rollup(True, "success", (_job("success"),))
    assert rollup_is_done(rollup, ("j1",))
    assert not rollup_is_done(rollup, ("j1", "j2"))
    assert not rollup_is_done(Rollup(False, "processing", (_job("processing"),)), ("j1",))


def test_all_done_without_jobs_is_a_protocol_error():
    with pytest.raises(DatrisProtocolError):
        rollup_is_done(Rollup(True, "processing", ()), ())


def test_rollup_error_names_every_failed_job():
    rollup = Rollup(
        True,
        "error",
        (
            _job("error", "j1", JobError("PostgresLoader", "bad column")),
            _job("timed_out", "j2"),
            _job("success", "j3"),
        ),
    )
    with pytest.raises(DatrisRunFailedError) as err:
        judge_rollup("t", rollup)
    assert "failed in PostgresLoader: bad column" in str(err.value)
    assert "j2 ended timed_out" in str(err.value)
    assert "j3" not in str(err.value)


def test_rollup_warning_is_a_warning():
    assert "warnings" in (judge_rollup("t", Rollup(True, "warning", (_job("warning"),))) or "")
    assert judge_rollup("t", Rollup(True, "success", (_job("success"),))) is None


def test_outcome_rebuilt_from_the_run_log():
    row = RunLogEntry.parse(
        {
            "tapName": "t",
            "runTime": "2026-05-04 14:03:19 UTC",
            "status": "success",
            "recordCount": 5,
            "mode": "run",
            "publisherToken": "p",
            "pipelineRollup": {
                "allDone": False,
                "status": "processing",
                "jobs": [{"pipelineToken": "j1", "pipeline": "orders", "status": "processing"}],
            },
        }
    )
    outcome = ScriptOutcome.from_run_log(row, target_pipeline="orders")
    assert (outcome.publisher_token, outcome.pipeline_tokens, outcome.record_count) == ("p", ("j1",), 5)
    failed = RunLogEntry.parse({"tapName": "t", "runTime": "x", "status": "failure", "error": "boom"})
    assert ScriptOutcome.from_run_log(failed, target_pipeline="orders").error == "boom"
