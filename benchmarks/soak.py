"""The fault-injection soak at scale: many seeded DAG runs against the stand-in Datris, random faults each.

    python benchmarks/soak.py --runs 200 --seed 7

Each run resets the stand-in, queues a random :class:`~datris_provider.testing.faults.FaultPlan` (5xx
bursts, 429 with Retry-After, resets, proxy pages, read timeouts, a proxy cutting the run call while the
run goes on, run calls stopped before the tap ran, status bursts that use up an Airflow try), runs the
fault DAG of ``tests/dags/fault_dags.py`` through ``dag.test()`` (sync and deferrable in turn, task
retries on) and checks it with :func:`~datris_provider.testing.faults.check_run`. The last line is::

    soak: runs=.. faults=.. double_fires=0 lost_lines=0 duplicated_lines=0 key_leaks=0 wrong_outcomes=0 ...

The exit code is 0 only when every count of a broken promise is 0. The test suite runs a bounded
version of the same soak (``tests/test_fault_injection.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datris_provider.testing.dag_runner import AirflowDagRunner, connection_json, use_isolated_airflow_home

if TYPE_CHECKING:
    from collections.abc import Iterator

    from datris_provider.testing.server import StandInDatris

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "tests" / "dags"
KEY = "dk_soak_5ecret_00112233445566778899"
# In step with tests/dags/fault_dags.py (retries=2, max_poll_failures=2) and the connection below.
DAG_IDS = ("fault_sync", "fault_deferred")
FAULT_TAP = "fault_tap"
CLIENT_RETRIES = 3
REQUEST_TIMEOUT = 0.5


@contextmanager
def captured_output() -> Iterator[dict[str, str]]:
    """Send everything written to file descriptors 1 and 2 to a temporary file; yield its text after."""
    box: dict[str, str] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield box
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            box["text"] = sink.read().decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="how many DAG runs (default 200)")
    parser.add_argument("--seed", type=int, default=7, help="the seed of the whole soak (default 7)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line")
    args = parser.parse_args(argv)

    # Before anything imports Airflow: a throw-away home, so the soak touches no real Airflow set-up.
    use_isolated_airflow_home([DAGS])
    from datris_provider.testing import StandInDatris
    from datris_provider.testing.faults import FaultBudget, run_soak, story_tap

    budget = FaultBudget(
        client_attempts=CLIENT_RETRIES + 1, max_poll_failures=2, task_retries=2, request_timeout=REQUEST_TIMEOUT
    )

    def prepare(stand_in: StandInDatris) -> None:
        stand_in.require_api_keys()
        stand_in.add_api_key(KEY, label="airflow")
        stand_in.add_tap(story_tap(FAULT_TAP))

    def report(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    started = time.monotonic()
    with StandInDatris() as datris:
        extra = {"retries": CLIENT_RETRIES, "retry_delay": 0.01, "timeout": REQUEST_TIMEOUT}
        os.environ["AIRFLOW_CONN_DATRIS_DEFAULT"] = connection_json(datris.url, api_key=KEY, extra=extra)
        runner = AirflowDagRunner([DAGS])
        with captured_output():
            runner.ensure_db()
            for dag_id in DAG_IDS:
                runner.get_dag(dag_id)

        def run_dag(dag_id: str) -> Any:
            with captured_output() as output:
                outcome = runner.run(dag_id)
            outcome.log = output["text"]
            return outcome

        summary = run_soak(
            datris,
            run_dag,
            runs=args.runs,
            seed=args.seed,
            dag_ids=DAG_IDS,
            prepare=prepare,
            tap_name=FAULT_TAP,
            api_key=KEY,
            budget=budget,
            report=report,
        )
    for problem in summary.problems:
        print("PROBLEM", problem)
    print(f"{summary.line()} seed={args.seed} seconds={time.monotonic() - started:.0f}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
