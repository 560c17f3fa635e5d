"""A soak: many seeded DAG runs, each against a fresh stand-in with a random :class:`FaultPlan`.

:func:`run_soak` returns a :class:`SoakSummary` whose :meth:`~SoakSummary.line` is
``soak: runs=.. faults=.. double_fires=0 lost_lines=0 ...``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from datris_provider.testing.faults import SOAK_ROUTES, FaultPlan, Violation, check_run

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from datris_provider.testing.faults import FaultBudget
    from datris_provider.testing.server import StandInDatris

__all__ = ["SoakSummary", "run_soak"]


@dataclass
class SoakSummary:
    """Totals of a soak: how many runs, faults hit, and each kind of broken promise."""

    runs: int = 0
    faults: int = 0
    planned_faults: int = 0
    double_fires: int = 0
    lost_lines: int = 0
    duplicated_lines: int = 0
    key_leaks: int = 0
    wrong_outcomes: int = 0
    airflow_retries: int = 0
    problems: list[str] = field(default_factory=list)

    def add(
        self, label: str, plan: FaultPlan, faults_hit: int, violations: Sequence[Violation], *, tries: int = 1
    ) -> None:
        """Count one run: the faults it hit, its Airflow tries and what :func:`check_run` found."""
        self.runs += 1
        self.faults += faults_hit
        self.planned_faults += plan.injected
        self.airflow_retries += max(0, tries - 1)
        for violation in violations:
            if violation.kind == "double_fire":
                self.double_fires += violation.count
            elif violation.kind == "lost_line":
                self.lost_lines += violation.count
            elif violation.kind == "duplicated_line":
                self.duplicated_lines += violation.count
            elif violation.kind == "key_leak":
                self.key_leaks += violation.count
            else:
                self.wrong_outcomes += violation.count
        if violations:
            self.problems.append(f"{label}: " + "; ".join(str(v) for v in violations))

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """``soak: runs=.. faults=.. double_fires=.. lost_lines=.. duplicated_lines=.. key_leaks=.. ...``"""
        return (
            f"soak: runs={self.runs} faults={self.faults} double_fires={self.double_fires} "
            f"lost_lines={self.lost_lines} duplicated_lines={self.duplicated_lines} key_leaks={self.key_leaks} "
            f"wrong_outcomes={self.wrong_outcomes} airflow_retries={self.airflow_retries}"
        )


def run_soak(
    stand_in: StandInDatris,
    run_dag: Callable[[str], Any],
    *,
    runs: int,
    seed: int,
    dag_ids: Sequence[str],
    prepare: Callable[[StandInDatris], None],
    tap_name: str,
    api_key: str | None = None,
    budget: FaultBudget | None = None,
    routes: Sequence[str] = SOAK_ROUTES,
    report: Callable[[str], None] | None = None,
) -> SoakSummary:
    """Run ``runs`` seeded DAG runs, each against a fresh stand-in with a random :class:`FaultPlan`.

    :param stand_in: a running stand-in; it is reset before each run.
    :param run_dag: runs a DAG by id and returns its outcome (e.g. ``datris_dag_runner.run``).
    :param runs: how many runs.
    :param seed: the seed of the whole soak; run ``i`` uses a seed drawn from it.
    :param dag_ids: the DAGs to take turns with (e.g. the sync and the deferrable variant).
    :param prepare: sets a freshly reset stand-in up (taps, keys) before the faults are queued.
    :param tap_name: the tap the DAGs run.
    :param api_key: the connection's key, checked for leaks.
    :param budget: what the DAGs tolerate (must match their retries and ``max_poll_failures``).
    :param routes: the routes faults are drawn for.
    :param report: called with one line per run (e.g. ``print``), for progress.
    """
    rng = random.Random(seed)
    summary = SoakSummary()
    for index in range(runs):
        run_seed = rng.randrange(2**32)
        dag_id = dag_ids[index % len(dag_ids)]
        stand_in.wait_until_idle()
        stand_in.reset_state()
        prepare(stand_in)
        plan = FaultPlan.random(run_seed, routes=routes, budget=budget)
        plan.apply(stand_in)
        started = time.monotonic()
        outcome = run_dag(dag_id)
        seconds = time.monotonic() - started
        stand_in.wait_until_idle()
        faults_hit = sum(1 for request in stand_in.requests if request.fault)
        violations = check_run(stand_in, outcome, api_key=api_key, tap_name=tap_name, expected_state="success")
        tries = max((getattr(outcome, "try_numbers", None) or {"": plan.attempts_used + 1}).values())
        if tries > plan.attempts_used + 1:
            # Only a fault built to use up a try may cost an Airflow retry. (Code that absorbs more, e.g.
            # with an extra poll before deferring, may need fewer.)
            violations.append(
                Violation("wrong_tries", f"the task ran {tries} tries; the faults use up at most {plan.attempts_used}")
            )
        label = f"run {index} {dag_id} seed={run_seed} [{plan.describe()}]"
        summary.add(label, plan, faults_hit, violations, tries=tries)
        if report is not None:
            verdict = "ok" if not violations else "; ".join(str(v) for v in violations)
            report(f"{label}: {seconds:.1f} s, tries {tries}, faults hit {faults_hit}, {verdict}")
    return summary
