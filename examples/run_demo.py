"""Run the daily tap example through Airflow against the stand-in Datris and show what it produced.

python examples/run_demo.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from datris_provider.testing.dag_runner import AirflowDagRunner, connection_json, use_isolated_airflow_home

EXAMPLES = Path(__file__).resolve().parent


def main() -> None:
    # Before anything imports Airflow: a throw-away home, so the demo touches no real Airflow set-up.
    use_isolated_airflow_home([EXAMPLES])
    from datris_provider.testing import StandInDatris, StandInTap

    with StandInDatris() as datris:
        datris.add_tap(
            StandInTap(
                name="customers_pg_to_snowflake",
                target_pipeline="customers",
                records=1532,
                script_seconds=0.5,
                logs=[
                    "[wrapper] loading tap script",
                    "[wrapper] calling fetch()",
                    "fetched page 1..4 from postgres",
                    "[wrapper] fetch() returned 1532 json record(s) in 0.50s",
                ],
            )
        )
        os.environ["AIRFLOW_CONN_DATRIS_DEFAULT"] = connection_json(datris.url)
        runner = AirflowDagRunner([EXAMPLES])
        dag = runner.get_dag("datris_daily_tap")
        dag.get_task("ingest_customers").poll_interval = 0.5
        outcome = runner.run("datris_daily_tap")

    print("\n=== Datris demo: DAG run", outcome.state, "===")
    for task_id, state in sorted(outcome.task_states.items()):
        print(f"task {task_id}: {state}")
    print("XComs of ingest_customers:")
    for key in ("publisher_token", "pipeline_tokens", "row_count", "duration_ms", "return_value"):
        if outcome.has_xcom("ingest_customers", key):
            print(f"  {key} = {json.dumps(outcome.xcom('ingest_customers', key))}")
    print("report:", outcome.xcom("report"))
    raise SystemExit(0 if outcome.state == "success" else 1)


if __name__ == "__main__":
    main()
