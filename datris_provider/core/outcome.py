"""What a tap run's answers mean: the terminal-state rules, written once for every mode."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from datris_provider.client.errors import DatrisProtocolError, DatrisRunFailedError

if TYPE_CHECKING:
    from datris_provider.client.models import Rollup, RunLogEntry, TapRunResponse

# Skipped runs the docs call a success: another run of the tap is the real one.
SKIP_REASONS = frozenset({"debounced", "already_running"})
NOTHING_LOADED_REASONS = {
    "no_records": "the tap returned zero records",
    "no_target_pipeline": "the tap has no target pipeline",
}


@dataclass(frozen=True)
class ScriptOutcome:
    """The end of the tap-script phase, read from the run answer or, after a cut call, the run log."""

    status: str
    persisted: bool
    persisted_reason: str | None
    publisher_token: str | None
    pipeline_tokens: tuple[str, ...]
    record_count: int
    error: str | None
    logs: str | None
    target_pipeline: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pipeline_tokens"] = list(self.pipeline_tokens)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScriptOutcome:
        return cls(**{**data, "pipeline_tokens": tuple(data.get("pipeline_tokens") or ())})

    @classmethod
    def from_response(cls, response: TapRunResponse) -> ScriptOutcome:
        return cls(
            status=response.status,
            persisted=response.persisted,
            persisted_reason=response.persisted_reason,
            publisher_token=response.publisher_token,
            pipeline_tokens=response.pipeline_tokens,
            record_count=response.record_count,
            error=response.error,
            logs=response.logs,
            target_pipeline=response.target_pipeline,
        )

    @classmethod
    def from_run_log(cls, entry: RunLogEntry, *, target_pipeline: str | None) -> ScriptOutcome:
        """Rebuild the outcome of a run whose answer never arrived from its run-log row."""
        pipeline = target_pipeline
        if entry.status == "failure":
            return cls("failure", False, "run_error", None, (), entry.record_count, entry.error, entry.logs, pipeline)
        if entry.status == "no_records":
            return cls("success", False, "no_records", None, (), 0, None, entry.logs, pipeline)
        if entry.status != "success":
            raise DatrisProtocolError(f"The run log holds a status the provider does not know: '{entry.status}'.")
        tokens = tuple(job.pipeline_token for job in entry.rollup.jobs) if entry.rollup else ()
        if entry.publisher_token:
            return cls(
                "success", True, None, entry.publisher_token, tokens, entry.record_count, None, entry.logs, pipeline
            )
        reason = None if pipeline else "no_target_pipeline"
        return cls("success", bool(pipeline), reason, None, (), entry.record_count, None, entry.logs, pipeline)


@dataclass(frozen=True)
class ScriptVerdict:
    """What to do after the script phase.

    ``track`` is true when pipeline jobs were submitted and must be followed; otherwise the run is
    over and ``final_status``/``warning`` say how.
    """

    track: bool
    final_status: str
    warning: str | None = None


def judge_script(tap_name: str, outcome: ScriptOutcome) -> ScriptVerdict:
    """Decide from ``status``/``persisted``/``persistedReason``, never from the HTTP code."""
    if outcome.status == "failure":
        raise DatrisRunFailedError(f"Tap '{tap_name}' failed on Datris: {outcome.error or 'no error text given'}")
    if outcome.status == "skipped":
        if outcome.persisted_reason in SKIP_REASONS:
            return ScriptVerdict(
                track=False,
                final_status=outcome.persisted_reason or "skipped",
                warning=(
                    f"Datris skipped this run of tap '{tap_name}' ({outcome.persisted_reason}): another run "
                    f"of the tap started moments ago and is the real one. {outcome.error or ''}"
                ).strip(),
            )
        raise DatrisProtocolError(
            f"Datris skipped tap '{tap_name}' for a reason the provider does not know: {outcome.persisted_reason!r}."
        )
    if outcome.persisted:
        if outcome.publisher_token:
            return ScriptVerdict(track=True, final_status="success")
        return ScriptVerdict(
            track=False,
            final_status="nothing_new",
            warning=f"Tap '{tap_name}' submitted no new pipeline job (everything was already ingested).",
        )
    reason = outcome.persisted_reason
    if reason in NOTHING_LOADED_REASONS:
        return ScriptVerdict(
            track=False,
            final_status=reason or "",
            warning=f"No data was loaded by tap '{tap_name}': {NOTHING_LOADED_REASONS[reason or '']} ({reason}).",
        )
    if reason == "test_mode":
        raise DatrisProtocolError(f"Datris ran tap '{tap_name}' in test mode although mode=run was sent.")
    raise DatrisRunFailedError(
        f"Datris did not persist the run of tap '{tap_name}' and gave the reason {reason!r}; "
        "check the tap's Run History in Datris."
    )


def rollup_is_done(rollup: Rollup, expected_tokens: tuple[str, ...]) -> bool:
    """True when every job is in a terminal state and every job the run submitted is present."""
    if not rollup.all_done:
        return False
    if not rollup.jobs:
        raise DatrisProtocolError("Datris reported allDone with no jobs, which its contract rules out.")
    present = {job.pipeline_token for job in rollup.jobs}
    return all(job.finished for job in rollup.jobs) and set(expected_tokens) <= present


def loaded_nothing(rollup: Rollup) -> bool:
    """True when every job ended and every one of them failed: nothing of the run or upload was loaded,
    so a retry may start it anew without loading anything twice. A run with some jobs loaded is not
    started again (that would load those twice); its retry fails on the same error."""
    return rollup.all_done and bool(rollup.jobs) and all(job.status in ("error", "timed_out") for job in rollup.jobs)


def judge_rollup(what: str, rollup: Rollup) -> str | None:
    """Raise for a failed pipeline, return a warning for a warning, ``None`` for a clean success.

    :param what: how messages name the run, e.g. ``tap 'orders'``.
    """
    failed = [job for job in rollup.jobs if job.status in ("error", "timed_out")]
    if rollup.status == "error" or failed:
        details = "; ".join(
            f"pipeline '{job.pipeline}' job {job.pipeline_token} "
            + (
                f"failed in {job.last_error.process_name}: {job.last_error.description}"
                if job.last_error
                else f"ended {job.status}"
            )
            for job in failed
        )
        raise DatrisRunFailedError(f"The pipeline of {what} failed: {details or 'no job detail given'}")
    if rollup.status == "warning":
        warned = ", ".join(f"'{job.pipeline}' ({job.pipeline_token})" for job in rollup.jobs if job.status == "warning")
        return f"The pipeline of {what} finished with warnings: {warned}. Check its events above."
    return None


def jobs_summary(rollup: Rollup | None) -> list[dict[str, Any]]:
    if rollup is None:
        return []
    return [
        {"pipeline_token": job.pipeline_token, "pipeline": job.pipeline, "status": job.status} for job in rollup.jobs
    ]
