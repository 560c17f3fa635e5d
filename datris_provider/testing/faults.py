"""Seeded fault plans for the stand-in Datris, and a checker for what a run left behind.

Use them to prove that code driving Datris survives a flaky network and a flaky server without
starting a tap twice, losing or repeating a log line, or leaking the API key::

    from datris_provider.testing.faults import FaultPlan, check_run, story_tap

    datris.add_tap(story_tap("orders_api"))
    plan = FaultPlan.random(seed=7)          # a random set of faults the run must survive
    plan.apply(datris)
    outcome = datris_dag_runner.run("my_dag")
    assert check_run(datris, outcome, api_key=KEY, expected_state="success") == []

:class:`FaultPlan` holds :class:`Fault` objects, each one call of the stand-in's fault injection
(``fail``, ``delay``, ``reset``, ``html``, ``garbage``, ``proxy_timeout``). :meth:`FaultPlan.random`
draws a plan from a seed within a :class:`FaultBudget`, so the run is expected to succeed: faults on
the calls that are safe to repeat stay within the client's repeats, and at most
``task_retries`` faults use up an Airflow attempt (a run call that never reached the tap, or a burst
of failed status polls longer than ``max_poll_failures``).

:func:`check_run` returns the :class:`Violation` list of one run: a wrong final state, a tap run
started more (or fewer) times than expected, a Datris log line lost or printed twice within one
Airflow try, and the API key found in the log, the XComs or a request URL or body.

:func:`run_soak` puts both together for many seeded runs and returns a :class:`SoakSummary` whose
:meth:`~SoakSummary.line` is ``soak: runs=.. faults=.. double_fires=0 lost_lines=0 ...``.

Nothing here imports Airflow; the stand-in is imported only where a tap is built.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from datris_provider.testing.server import StandInDatris, StandInTap

__all__ = [
    "KILL_ROUTE",
    "RUN_ROUTE",
    "SOAK_ROUTES",
    "STATUS_ROUTE",
    "TRY_END_MARKER",
    "VIOLATION_KINDS",
    "Fault",
    "FaultBudget",
    "FaultPlan",
    "SoakSummary",
    "Violation",
    "check_run",
    "count_lines",
    "expected_lines",
    "run_soak",
    "split_attempts",
    "story_tap",
]

RUN_ROUTE = "POST /tap/run"
KILL_ROUTE = "POST /job/kill"
STATUS_ROUTE = "GET /pipeline/status"
# The calls a tap run makes; the repeatable GETs first.
SOAK_ROUTES: tuple[str, ...] = ("GET /version", "GET /tap", "GET /tap/logs", STATUS_ROUTE, RUN_ROUTE)

# Airflow logs this when a failed try will be retried: it ends the try's part of a dag.test() output.
TRY_END_MARKER = "new_state=up_for_retry"

# Faults whose calls reach the real handler: the request "reached the server".
_HANDLED_FAULTS = frozenset({None, "delay", "proxy_timeout"})

VIOLATION_KINDS = ("wrong_state", "wrong_tries", "double_fire", "no_run", "lost_line", "duplicated_line", "key_leak")


# --------------------------------------------------------------------------------------------------
# Fault plans
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault-injection call on the stand-in.

    :param route: e.g. ``"GET /pipeline/status"``.
    :param kind: ``fail``, ``delay``, ``reset``, ``html``, ``garbage`` or ``proxy_timeout``.
    :param times: how many calls of the route it answers.
    :param status: the HTTP status (``fail``, ``html``, ``garbage``).
    :param seconds: the delay (``delay``), or when the proxy gives up (``proxy_timeout``).
    :param headers: extra headers of a ``fail`` answer, e.g. ``{"Retry-After": "0"}``.
    :param body: the body of a ``fail`` or ``garbage`` answer.
    """

    route: str
    kind: str
    times: int = 1
    status: int | None = None
    seconds: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None

    def apply(self, stand_in: StandInDatris) -> None:
        """Queue this fault on ``stand_in`` (faults of one route are used up in the order queued)."""
        if self.kind == "fail":
            stand_in.fail(self.route, self.status or 503, times=self.times, body=self.body, headers=self.headers)
        elif self.kind == "delay":
            stand_in.delay(self.route, self.seconds, times=self.times)
        elif self.kind == "reset":
            stand_in.reset(self.route, times=self.times)
        elif self.kind == "html":
            stand_in.html(self.route, status=self.status or 502, times=self.times)
        elif self.kind == "garbage":
            stand_in.garbage(self.route, body=self.body or "not json", status=self.status or 200, times=self.times)
        elif self.kind == "proxy_timeout":
            stand_in.proxy_timeout(self.route, times=self.times, after_seconds=self.seconds)
        else:
            raise ValueError(f"unknown fault kind {self.kind!r}")

    def describe(self) -> str:
        """A short text such as ``GET /tap 429 Retry-After=0 x2``."""
        what = self.kind
        if self.kind in ("fail", "html", "garbage") and self.status is not None:
            what = f"{self.kind} {self.status}"
        if self.kind in ("delay", "proxy_timeout") and self.seconds:
            what = f"{self.kind} {self.seconds:g}s"
        extras = "".join(f" {name}={value}" for name, value in self.headers.items())
        return f"{self.route} {what}{extras} x{self.times}"


@dataclass(frozen=True)
class FaultBudget:
    """What the code under test tolerates, so a random plan stays one the run must survive.

    :param client_attempts: attempts per call that is safe to repeat (connection extra ``retries`` + 1).
    :param max_poll_failures: failed status polls in a row the operator tolerates.
    :param task_retries: the task's Airflow ``retries``.
    :param request_timeout: the connection extra ``timeout``; a ``delay`` fault on a GET lasts longer,
        so the call times out.
    """

    client_attempts: int = 4
    max_poll_failures: int = 2
    task_retries: int = 2
    request_timeout: float = 0.5

    @property
    def poll_burst(self) -> int:
        """Failed status calls in a row that use up one Airflow attempt."""
        return self.client_attempts * (self.max_poll_failures + 1)


@dataclass(frozen=True)
class FaultPlan:
    """A set of faults to queue on a stand-in before a run.

    :param faults: the faults, applied in order.
    :param seed: the seed it was drawn from, if any (for reproducing a soak run).
    :param attempts_used: how many Airflow attempts the plan is built to use up, at most (0: the first
        try must succeed). Exactly this many when each poll and each run call makes one client call;
        code that absorbs part of a burst (an extra poll before deferring) may need fewer.
    """

    faults: tuple[Fault, ...] = ()
    seed: int | None = None
    attempts_used: int = 0

    def apply(self, stand_in: StandInDatris) -> None:
        """Queue every fault on ``stand_in``."""
        for fault in self.faults:
            fault.apply(stand_in)

    @property
    def injected(self) -> int:
        """Calls the plan answers with a fault, if they all happen."""
        return sum(fault.times for fault in self.faults)

    def describe(self) -> str:
        if not self.faults:
            return "no faults"
        return "; ".join(fault.describe() for fault in self.faults)

    @classmethod
    def random(
        cls,
        seed: int,
        *,
        routes: Sequence[str] = SOAK_ROUTES,
        budget: FaultBudget | None = None,
        max_faults: int = 4,
    ) -> FaultPlan:
        """Draw a plan from ``seed`` that a run with ``budget`` must survive, with one tap run only.

        - The repeatable GETs get 5xx, 429 (``Retry-After: 0``), connection resets, proxy HTML pages
          and read timeouts; per route fewer than ``client_attempts`` in all, so no call fails for
          good, except status bursts of exactly ``poll_burst`` failed calls, each of which uses up an
          Airflow attempt whose retry must attach to the run (queued first, before any fault that
          lets the status handler run).
        - ``POST /tap/run`` gets a proxy cutting the call while the run goes on, a slow answer, or a
          fault that stops the call before the tap runs (reset, 503, 429, a proxy's 502 page), which
          uses up an attempt whose retry must start the run.
        - At most ``task_retries`` attempts are used up in all.

        :param seed: the seed; the same seed always gives the same plan.
        :param routes: the routes to choose from (any of :data:`SOAK_ROUTES`).
        :param budget: what the run tolerates.
        :param max_faults: the most faults added beside the ones that use up attempts.
        """
        budget = budget or FaultBudget()
        unknown = set(routes) - set(SOAK_ROUTES)
        if unknown:
            raise ValueError(f"routes must be among {SOAK_ROUTES}, not {sorted(unknown)}")
        rng = random.Random(seed)
        killers: list[Fault] = []
        kill_routes = [route for route in (RUN_ROUTE, STATUS_ROUTE) if route in routes]
        attempts_used = rng.randint(0, budget.task_retries) if kill_routes else 0
        for _ in range(attempts_used):
            route = rng.choice(kill_routes)
            if route == RUN_ROUTE:
                killers.append(_run_never_started(rng))
            else:
                killers.append(_call_failure(rng, STATUS_ROUTE, budget.poll_burst, budget, allow_delay=False))
        others: list[Fault] = []
        used: Counter[str] = Counter()
        for _ in range(rng.randint(1, max_faults)):
            route = rng.choice(list(routes))
            if route == RUN_ROUTE:
                if rng.random() < 0.6:
                    others.append(Fault(RUN_ROUTE, "proxy_timeout", seconds=0.05))
                else:
                    others.append(Fault(RUN_ROUTE, "delay", seconds=0.1))
                continue
            limit = budget.poll_burst - 1 if route == STATUS_ROUTE else budget.client_attempts - 1
            room = limit - used[route]
            if room <= 0:
                continue
            times = rng.randint(1, min(3, room))
            used[route] += times
            others.append(_call_failure(rng, route, times, budget, allow_delay=True))
        # Faults of one route are used up in order: attempt-eating bursts first, so the status calls
        # that let the handler move the job on (delays) come after them and cannot end the pipeline
        # while an attempt is failing.
        return cls(faults=tuple(killers + others), seed=seed, attempts_used=attempts_used)


def _call_failure(rng: random.Random, route: str, times: int, budget: FaultBudget, *, allow_delay: bool) -> Fault:
    """A fault that makes each of ``times`` calls of a repeatable GET fail at the client."""
    choices = ["503", "502", "504", "429", "reset", "html"]
    if allow_delay:
        choices.append("delay")
    choice = rng.choice(choices)
    if choice == "reset":
        return Fault(route, "reset", times=times)
    if choice == "html":
        return Fault(route, "html", times=times, status=rng.choice([502, 503, 504]))
    if choice == "delay":
        return Fault(route, "delay", times=times, seconds=round(budget.request_timeout + 0.25, 3))
    if choice == "429":
        return Fault(route, "fail", times=times, status=429, headers={"Retry-After": "0"})
    return Fault(route, "fail", times=times, status=int(choice))


def _run_never_started(rng: random.Random) -> Fault:
    """A fault that stops ``POST /tap/run`` before the tap runs."""
    choice = rng.choice(["reset", "503", "429", "html"])
    if choice == "reset":
        return Fault(RUN_ROUTE, "reset")
    if choice == "html":
        return Fault(RUN_ROUTE, "html", status=502)
    if choice == "429":
        return Fault(RUN_ROUTE, "fail", status=429, headers={"Retry-After": "0"})
    return Fault(RUN_ROUTE, "fail", status=503)


# --------------------------------------------------------------------------------------------------
# Taps that make loss and duplication visible
# --------------------------------------------------------------------------------------------------


def story_tap(name: str = "fault_tap", *, lines: int = 6, job_seconds: float | None = 8.0, **fields: Any) -> StandInTap:
    """A tap whose script prints ``lines`` distinct lines and whose job runs ``job_seconds``.

    Every line and every pipeline event is different, so a line printed twice or not at all shows.

    :param name: the tap name.
    :param lines: how many script log lines.
    :param job_seconds: stand-in seconds the started job runs (long enough to spread its events over
        several status polls; ``None``: it never ends by itself, for kill tests).
    :param fields: any other :class:`~datris_provider.testing.server.StandInTap` field.
    """
    from datris_provider.testing.server import StandInTap

    logs = [
        f"[wrapper] {name} step {index:02d}/{lines:02d}: fetched page {index} of the source"
        for index in range(1, lines + 1)
    ]
    values: dict[str, Any] = {"target_pipeline": "orders", "records": 3, "logs": logs, **fields}
    return StandInTap(name=name, job_seconds=job_seconds, **values)


# --------------------------------------------------------------------------------------------------
# Checking a run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One broken promise found by :func:`check_run`.

    :param kind: one of ``wrong_state``, ``double_fire``, ``no_run``, ``lost_line``,
        ``duplicated_line``, ``key_leak``, and ``wrong_tries`` (from :func:`run_soak`: the task
        was retried more often than the fault plan explains).
    :param detail: what was found, in words.
    :param count: how many (lines, extra runs, places) it stands for.
    """

    kind: str
    detail: str
    count: int = 1

    def __str__(self) -> str:
        return f"{self.kind} x{self.count}: {self.detail}"


def expected_lines(stand_in: StandInDatris, tap_name: str) -> Counter[str]:
    """The Datris lines a user must see for the newest ``mode=run`` run of ``tap_name``.

    Each script log line as ``[tap <tap>] <line>`` and each pipeline event of the run's publisher
    token as ``[<pipeline>] <processName> <state>: <description>``, with how often each occurs.
    """
    rows = [row for row in stand_in.run_logs(tap_name) if row.get("mode") == "run"]
    wanted: Counter[str] = Counter()
    if not rows:
        return wanted
    newest = rows[0]
    for line in str(newest.get("logs") or "").split("\n"):
        line = line.rstrip("\r")
        if line:
            wanted[f"[tap {tap_name}] {line}".rstrip()] += 1
    token = newest.get("publisherToken")
    if token:
        for event in stand_in.events(str(token)):
            text = (
                f"[{event.get('pipeline') or 'pipeline'}] {event.get('processName', '')} "
                f"{event.get('state', '')}: {event.get('description', '')}"
            )
            wanted[text.rstrip()] += 1
    return wanted


def split_attempts(log: str, end_marker: str = TRY_END_MARKER) -> list[str]:
    """Split a captured ``dag.test()`` output into one text per task try.

    A try ends with the line holding ``end_marker`` (Airflow's "Task instance state updated ...
    new_state=up_for_retry"); the text after the last such line is the last try. Airflow keeps one
    log per try, and a retry that attaches to a run prints the run's story again so that its own log
    is complete; "printed twice" is therefore judged within one try.
    """
    if not end_marker or end_marker not in log:
        return [log]
    tries: list[str] = []
    current: list[str] = []
    for line in log.splitlines(keepends=True):
        current.append(line)
        if end_marker in line:
            tries.append("".join(current))
            current = []
    tries.append("".join(current))
    return tries


def count_lines(text: str, needles: Iterable[str]) -> Counter[str]:
    """How many log lines of ``text`` hold each needle as their message.

    A log line counts for a needle when the needle starts at a ``[`` and ends the line or is
    followed by `` [`` (structlog's ``[logger]``) after optional padding, so ``line 1`` is not
    counted for ``line 10``. Each log line counts for at most one needle: the leftmost, longest match.
    """
    wanted = {needle.rstrip() for needle in needles}
    counts: Counter[str] = Counter()
    if not wanted:
        return counts
    for line in text.splitlines():
        if "[" not in line:
            continue
        starts = [index for index, char in enumerate(line) if char == "["]
        ends = [len(line)]
        position = line.find(" [")
        while position != -1:
            ends.append(position)
            position = line.find(" [", position + 1)
        ends.sort(reverse=True)
        found = _first_match(line, starts, ends, wanted)
        if found is not None:
            counts[found] += 1
    return counts


def _first_match(line: str, starts: list[int], ends: list[int], wanted: set[str]) -> str | None:
    for start in starts:
        for end in ends:
            if end <= start:
                break
            candidate = line[start:end].rstrip()
            if candidate in wanted:
                return candidate
    return None


def _outcome_parts(outcome: Any) -> tuple[str, str | None, Any]:
    if isinstance(outcome, str):
        return outcome, None, None
    log = str(getattr(outcome, "log", ""))
    state = getattr(outcome, "state", None)
    xcoms = outcome.all_xcoms() if hasattr(outcome, "all_xcoms") else None
    return log, None if state is None else str(state), xcoms


def check_run(
    stand_in: StandInDatris,
    outcome: Any,
    api_key: str | None = None,
    expected_state: str | None = "success",
    *,
    tap_name: str | None = None,
    expected_runs: int | None = 1,
    check_lines: bool | None = None,
    try_end_marker: str = TRY_END_MARKER,
    extra_texts: Mapping[str, str] | None = None,
) -> list[Violation]:
    """Check what one run left behind; an empty list means every promise held.

    :param stand_in: the stand-in the run talked to (its requests, runs, run logs and events).
    :param outcome: a :class:`~datris_provider.testing.dag_runner.DagRunOutcome` (``.log``, ``.state``,
        ``.all_xcoms()``), or just the captured log text.
    :param api_key: the key the connection used; it must appear in no log line, XCom, request URL or
        request body.
    :param expected_state: the DAG run's expected final state (``None``: not checked).
    :param tap_name: the tap to check; by default every tap a run call named.
    :param expected_runs: how many ``POST /tap/run`` calls must reach the tap (``None``: not
        checked). A call answered by a fault that stops it before the handler (reset, fail, html,
        garbage) did not reach it.
    :param check_lines: check that each script line and pipeline event of the newest run is printed
        once per try and is not lost; by default only when the run is expected to succeed (a failed
        or killed run legitimately stops printing).
    :param try_end_marker: the text of the line that ends a failed task try (see :func:`split_attempts`).
    :param extra_texts: more texts to search for the key, by name (e.g. rendered template fields).
    """
    log, state, xcoms = _outcome_parts(outcome)
    violations: list[Violation] = []
    if expected_state is not None and state is not None and state != expected_state:
        violations.append(Violation("wrong_state", f"the DAG run ended {state!r}, expected {expected_state!r}"))

    taps = [tap_name] if tap_name else _taps_run(stand_in)
    for tap in taps:
        violations.extend(_check_runs(stand_in, tap, expected_runs))
        lines_wanted = check_lines if check_lines is not None else expected_state == "success"
        if lines_wanted:
            violations.extend(_check_lines(stand_in, tap, log, try_end_marker))
    if api_key:
        violations.extend(_check_key(stand_in, api_key, log, xcoms, extra_texts or {}))
    return violations


def _taps_run(stand_in: StandInDatris) -> list[str]:
    names: list[str] = []
    for call in stand_in.calls(RUN_ROUTE):
        name = call.json.get("name") if isinstance(call.json, dict) else None
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def _check_runs(stand_in: StandInDatris, tap: str, expected_runs: int | None) -> list[Violation]:
    if expected_runs is None:
        return []
    reached = [
        call
        for call in stand_in.calls(RUN_ROUTE)
        if call.fault in _HANDLED_FAULTS and isinstance(call.json, dict) and call.json.get("name") == tap
    ]
    started = [run for run in stand_in.script_runs(tap) if run.mode == "run"]
    extra = max(len(reached), len(started)) - expected_runs
    if extra > 0:
        return [
            Violation(
                "double_fire",
                f"POST /tap/run reached tap '{tap}' {len(reached)} time(s) and started {len(started)} run(s); "
                f"expected {expected_runs}",
                count=extra,
            )
        ]
    if len(started) < expected_runs:
        return [
            Violation(
                "no_run",
                f"tap '{tap}' ran {len(started)} time(s), expected {expected_runs}",
                count=expected_runs - len(started),
            )
        ]
    return []


def _check_lines(stand_in: StandInDatris, tap: str, log: str, try_end_marker: str) -> list[Violation]:
    wanted = expected_lines(stand_in, tap)
    if not wanted:
        return []
    per_try = [count_lines(text, wanted) for text in split_attempts(log, try_end_marker)]
    violations: list[Violation] = []
    for needle, times in wanted.items():
        best = max(counts[needle] for counts in per_try)
        if best < times:
            violations.append(
                Violation("lost_line", f"{needle!r} printed {best} time(s), expected {times}", count=times - best)
            )
        for number, counts in enumerate(per_try, start=1):
            if counts[needle] > times:
                violations.append(
                    Violation(
                        "duplicated_line",
                        f"{needle!r} printed {counts[needle]} time(s) in try {number}, expected {times}",
                        count=counts[needle] - times,
                    )
                )
    return violations


def _check_key(
    stand_in: StandInDatris, api_key: str, log: str, xcoms: Any, extra_texts: Mapping[str, str]
) -> list[Violation]:
    places: dict[str, str] = {"the log": log, **extra_texts}
    if xcoms is not None:
        places["the XComs"] = json.dumps({str(key): value for key, value in dict(xcoms).items()}, default=repr)
    for index, request in enumerate(stand_in.requests):
        where = f"request {index} ({request.route}) URL or body"
        places[where] = json.dumps({"query": request.query, "json": request.json}, default=repr)
    return [
        Violation("key_leak", f"the API key appears in {where}", count=text.count(api_key))
        for where, text in places.items()
        if api_key in text
    ]


# The soak builds on the plans and the checker above; it lives in its own module.
from datris_provider.testing.soak import SoakSummary, run_soak  # noqa: E402
