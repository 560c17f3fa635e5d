"""The trigger events, as one typed contract between the triggers and the task that resumes.

Every event is a plain-JSON dict with a ``status`` and the ``resume`` state the task handed to the
trigger. :func:`read_event` checks one on resume and fails closed with a message that says what is
wrong; keys it does not know are ignored, so an event written by another provider version is read
when it carries what this version needs, and refused in words when it does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from datris_provider._compat import AirflowFailException
from datris_provider.client.errors import DatrisRunFailedError, DatrisTransientError
from datris_provider.version import __version__

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from datris_provider.client.errors import DatrisError

SCRIPT_DONE = "script_done"
DONE = "done"
TIMEOUT = "timeout"
ERROR = "error"
EVENT_STATUSES = frozenset({SCRIPT_DONE, DONE, TIMEOUT, ERROR})
SCRIPT_EVENTS = frozenset({SCRIPT_DONE, ERROR})
WAIT_EVENTS = frozenset({DONE, TIMEOUT, ERROR})

# What each status must carry besides ``status`` and ``resume``, and of which JSON type.
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    SCRIPT_DONE: {"outcome": dict},
    DONE: {"rollup": dict},
    TIMEOUT: {"message": str},
    ERROR: {"message": str},
}
_RESUME_REQUIRED: dict[str, type | tuple[type, ...]] = {"try_number": int}


@dataclass(frozen=True)
class TriggerEnd:
    """A checked trigger event.

    :param status: one of :data:`EVENT_STATUSES`.
    :param resume: the state the task handed to the trigger when it deferred.
    :param outcome: ``script_done``: the script outcome (``ScriptOutcome.to_json()``).
    :param rollup: ``done``: the terminal rollup (``Rollup.to_json()``).
    :param message: ``timeout``/``error``: what happened, in words.
    :param unfinished: pipeline tokens not finished when the wait ended.
    :param killed: the trigger already asked Datris to kill the unfinished jobs.
    :param notes: ``[level, message]`` pairs the trigger reported, for the task log.
    """

    status: str
    resume: dict[str, Any]
    outcome: dict[str, Any] | None = None
    rollup: dict[str, Any] | None = None
    message: str = ""
    unfinished: list[str] = field(default_factory=list)
    killed: bool = False
    notes: list[list[str]] = field(default_factory=list)
    retryable: bool = False
    error_class: str = ""

    def raise_if_error(self) -> None:
        """An ``error`` event becomes the error Airflow should see: retried or failed for good."""
        if self.status != ERROR:
            return
        if not self.retryable:
            raise AirflowFailException(self.message)
        if self.error_class == "DatrisTransientError":
            raise DatrisTransientError(self.message)
        raise DatrisRunFailedError(self.message)


def event_payload(status: str, resume: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A trigger event of ``status`` (fields as in :class:`TriggerEnd`), stamped with this version."""
    if status not in EVENT_STATUSES:
        raise ValueError(f"unknown Datris trigger event status {status!r}")
    return {"status": status, "resume": resume, "provider_version": __version__, **fields}


def error_payload(err: DatrisError, resume: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An ``error`` event in words the task can act on (never the API key)."""
    return event_payload(
        ERROR, resume, message=str(err), error_class=type(err).__name__, retryable=err.retryable, **fields
    )


def read_event(event: Any, allowed: Collection[str]) -> TriggerEnd:
    """Check a trigger event on resume; fail the task, in words, on anything it cannot act on."""
    if not isinstance(event, dict):
        raise _refused(f"it is {type(event).__name__}, not a dict", event)
    status = str(event.get("status"))
    if status not in allowed:
        expected = ", ".join(sorted(allowed))
        raise _refused(f"its status is {event.get('status')!r} where this step expects one of {expected}", event)
    resume = event.get("resume")
    if not isinstance(resume, dict):
        raise _refused("it carries no 'resume' state", event)
    _check_keys(resume, _RESUME_REQUIRED, "resume state", event)
    _check_keys(event, _REQUIRED[status], f"'{status}' event", event)
    unfinished = event.get("unfinished") or []
    notes = event.get("notes") or []
    if not isinstance(unfinished, list) or not all(isinstance(token, str) for token in unfinished):
        raise _refused("'unfinished' is not a list of tokens", event)
    if not isinstance(notes, list):
        raise _refused("'notes' is not a list", event)
    return TriggerEnd(
        status=status,
        resume=resume,
        outcome=event.get("outcome"),
        rollup=event.get("rollup"),
        message=str(event.get("message", "")),
        unfinished=list(unfinished),
        killed=bool(event.get("killed", False)),
        notes=[[str(level), str(text)] for level, text in (note for note in notes if _is_note(note))],
        retryable=bool(event.get("retryable", False)),
        error_class=str(event.get("error_class", "")),
    )


def _is_note(note: Any) -> bool:
    return isinstance(note, (list, tuple)) and len(note) == 2


def _check_keys(data: dict[str, Any], required: dict[str, type | tuple[type, ...]], what: str, event: Any) -> None:
    missing = [key for key in required if key not in data]
    if missing:
        raise _refused(f"its {what} lacks {', '.join(repr(key) for key in missing)}", event)
    for key, kind in required.items():
        if (isinstance(data[key], bool) and kind is int) or not isinstance(data[key], kind):
            raise _refused(f"its {what} has {key!r} of type {type(data[key]).__name__}", event)


def _refused(why: str, event: Any) -> AirflowFailException:
    version = event.get("provider_version", "an unknown version") if isinstance(event, dict) else "unknown"
    return AirflowFailException(
        f"The Datris trigger ended with an event this task cannot act on: {why} (written by provider "
        f"{version}; this is {__version__}). This happens when the provider was upgraded while the task was "
        "deferred: clear the task to start it again."
    )


def notes_of(messages: Sequence[tuple[str, str]]) -> list[list[str]]:
    return [[level, text] for level, text in messages]


def stale_event(event: Any, context: Any, log: Any) -> bool:
    """True when Airflow resumed this try with the trigger event of an earlier try.

    Airflow 3.0 and 3.1.0 keep a deferred task's ``next_method`` across a retry (apache/airflow#56704,
    fixed in 3.1.1): the retry would judge the failed try's event again instead of starting over.
    """
    resume = event.get("resume") if isinstance(event, dict) else None
    deferred_in = resume.get("try_number") if isinstance(resume, dict) else None
    current = context["ti"].try_number
    if deferred_in is None or deferred_in == current:
        return False
    log.warning(
        "Airflow resumed try %s with the trigger event of try %s (a bug of Airflow before 3.1.1); "
        "starting this try from the beginning.",
        current,
        deferred_in,
    )
    return True
