"""``@task.datris_tap``, seen through real DAGs run with dag.test() against the stand-in Datris."""

from __future__ import annotations

from datetime import datetime

import pytest

pytestmark = pytest.mark.dag


def _params(datris) -> list[dict]:
    return [call.json["params"] for call in datris.calls("POST /tap/run")]


def _rendered_fields(outcome, task_id: str) -> dict:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.settings import Session

    session = Session()
    try:
        row = (
            session.query(RenderedTaskInstanceFields)
            .filter_by(dag_id=outcome.dag_id, run_id=outcome.run_id, task_id=task_id)
            .one()
        )
        return dict(row.rendered_fields)
    finally:
        session.close()


# --- Registration -------------------------------------------------------------------------------


def test_task_datris_tap_is_discovered_through_the_provider_manifest():
    from airflow.sdk import task

    from datris_provider.decorators import datris_tap_task

    assert task.datris_tap is datris_tap_task


def test_decorated_task_is_a_datris_operator_named_after_the_decorator(datris_dag_runner):
    from datris_provider.operators import DatrisRunTapOperator

    dag = datris_dag_runner._runner.get_dag("taskflow_tap")
    op = dag.get_task("ingest_orders")

    assert isinstance(op, DatrisRunTapOperator)
    assert op.custom_operator_name == "@task.datris_tap"
    assert {"op_args", "op_kwargs", "tap_name", "tap_params", "datris_conn_id"} <= set(op.template_fields)
    assert op.multiple_outputs is False
    assert op.poll_interval == 0.05
    assert op.doc_md == "Load one day of orders."
    mapped = datris_dag_runner._runner.get_dag("taskflow_backfill_expand").get_task("backfill_day")
    assert mapped.operator_name == "@task.datris_tap"


def test_multiple_outputs_cannot_be_switched_on():
    from datris_provider.decorators import datris_tap_task

    with pytest.raises(ValueError, match="multiple_outputs=False"):
        datris_tap_task(tap_name="orders_api_to_postgres", multiple_outputs=True)


def test_a_dict_annotation_does_not_unroll_the_result():
    from airflow.sdk import DAG

    from datris_provider.decorators import datris_tap_task

    with DAG("annotated", schedule=None, start_date=datetime(2026, 5, 1)):

        @datris_tap_task(tap_name="orders_api_to_postgres")
        def annotated() -> dict:
            return {}

        output = annotated()

    assert output.operator.multiple_outputs is False


def test_async_functions_are_refused_at_parse_time():
    from airflow.sdk import DAG

    from datris_provider.decorators import datris_tap_task

    with DAG("async_tap", schedule=None, start_date=datetime(2026, 5, 1)):

        @datris_tap_task(tap_name="orders_api_to_postgres")
        async def async_params():
            return {}

        with pytest.raises(TypeError, match=r"async function async_params\(\)"):
            async_params()


# --- Runs ---------------------------------------------------------------------------------------


def test_function_params_reach_datris_and_the_result_feeds_downstream(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("taskflow_tap")

    assert outcome.state == "success"
    assert outcome.task_states == {"ingest_orders": "success", "report": "success"}
    result = outcome.xcom("ingest_orders")
    assert result["status"] == "success"
    assert result["row_count"] == 42
    assert outcome.xcom("ingest_orders", "row_count") == 42
    assert outcome.xcom("ingest_orders", "publisher_token") == result["publisher_token"]
    assert outcome.xcom("report") == "42 rows, success, 42 in the result"

    (params,) = _params(datris)
    assert set(params) == {"since", "until"}
    assert len(params["since"]) == len(params["until"]) == 10
    assert params["since"] <= params["until"]  # ds is the logical date: the interval's end for a manual run
    assert "ingest_orders() gave the tap parameters: since, until." in outcome.log
    # The UI's rendered fields show what the function returned, not the decorator's (empty) params.
    assert _rendered_fields(outcome, "ingest_orders")["tap_params"] == params


def test_params_built_from_upstream_output(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("taskflow_upstream_params")

    assert outcome.state == "success"
    assert _params(datris) == [{"since": "2026-04-01", "until": "2026-04-02", "batch": 7, "source": "upstream"}]
    # The function's `-> dict` annotation did not unroll the run result into per-key XComs.
    assert outcome.xcom("ingest_window")["row_count"] == 42
    assert not outcome.has_xcom("ingest_window", "status")
    assert not outcome.has_xcom("ingest_window", "since")


def test_function_params_are_merged_over_the_decorators_and_rendered(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("taskflow_params_merged")

    assert outcome.state == "success"
    (params,) = _params(datris)
    assert params["region"] == "eu"
    assert params["source"] == "function"
    assert params["dag"] == "taskflow_params_merged"
    datetime.strptime(params["day"], "%Y-%m-%d")  # "{{ ds }}" was rendered
    assert set(params) == {"region", "source", "dag", "day"}


def test_none_means_no_params(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("taskflow_no_params")

    assert outcome.state == "success"
    assert _params(datris) == [{}]
    assert "ingest_everything() gave no tap parameters." in outcome.log


def test_mapped_backfill_runs_once_per_window(datris, datris_dag_runner):
    datris.debounce_seconds = 0  # three runs of one tap within seconds; reset for the next test

    outcome = datris_dag_runner.run("taskflow_backfill_expand")

    assert outcome.state == "success"
    assert [outcome.task_states[f"backfill_day[{i}]"] for i in range(3)] == ["success"] * 3
    assert sorted(_params(datris), key=lambda p: p["since"]) == [
        {"since": "2026-04-01", "until": "2026-04-02"},
        {"since": "2026-04-02", "until": "2026-04-03"},
        {"since": "2026-04-03", "until": "2026-04-04"},
    ]
    assert [outcome.xcom("backfill_day", map_index=i)["status"] for i in range(3)] == ["success"] * 3
    assert outcome.xcom("total") == 3 * 42


def test_expand_kwargs_backfill_with_the_imported_factory(datris, datris_dag_runner):
    datris.debounce_seconds = 0

    outcome = datris_dag_runner.run("taskflow_backfill_expand_kwargs")

    assert outcome.state == "success"
    assert sorted(p["since"] for p in _params(datris)) == ["2026-03-01", "2026-03-08", "2026-03-15"]
    for i in range(3):
        assert outcome.xcom("backfill_window", "row_count", map_index=i) == 42


@pytest.mark.parametrize(
    ("dag_id", "function", "returned"),
    [
        ("taskflow_returns_list", "params_as_list()", "a list: ['2026-04-01', '2026-04-02']"),
        ("taskflow_returns_str", "params_as_str()", "a str: 'since=2026-04-01'"),
    ],
)
def test_wrong_return_type_fails_without_retry_or_call(datris, datris_dag_runner, dag_id, function, returned):
    outcome = datris_dag_runner.run(dag_id)

    (task_id,) = outcome.task_states
    assert outcome.task_states[task_id] == "failed"
    assert outcome.try_numbers[task_id] == 1  # retries=3, but a retry would return the same thing
    assert f"function {function} must return a dict of tap parameters" in outcome.log
    assert f"it returned {returned}" in outcome.log
    assert datris.requests == []


def test_params_are_validated_like_the_operators(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("taskflow_bad_param_key")

    assert outcome.task_states["params_with_bad_key"] == "failed"
    assert "'bad-key' is not a valid Datris parameter name" in outcome.log
    assert datris.requests == []


def test_datris_scheduled_tap_is_refused_without_running(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("taskflow_datris_scheduled")

    assert outcome.task_states["run_cron_tap"] == "failed"
    assert "is Datris-scheduled" in outcome.log
    assert datris.calls("POST /tap/run") == []


def test_pipeline_error_fails_the_decorated_task(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("taskflow_pipeline_error")

    assert outcome.task_states["run_bad_load"] == "failed"
    assert "failed in PostgresLoader" in outcome.log
    assert _params(datris) == [{"since": "2026-04-01"}]
    assert outcome.has_xcom("run_bad_load", "publisher_token")


def test_override_reuses_one_function_under_other_task_ids(datris, datris_dag_runner):
    outcome = datris_dag_runner.run("taskflow_override")

    assert outcome.state == "success"
    assert outcome.task_states == {"ingest_orders": "success", "ingest_customers": "success"}
    calls = datris.calls("POST /tap/run")
    assert [(c.json["name"], c.json["params"]) for c in calls] == [
        ("orders_api_to_postgres", {"table": "orders"}),
        ("customers_pg_to_snowflake", {"table": "customers"}),
    ]
    assert outcome.xcom("ingest_customers", "row_count") == 7


# --- The example ------------------------------------------------------------------------------------


def test_taskflow_example_runs(datris, datris_dag_runner):
    dag = datris_dag_runner._runner.get_dag("datris_taskflow_tap")
    dag.get_task("ingest_orders").poll_interval = 0.05  # the example polls every 15 s

    outcome = datris_dag_runner.run("datris_taskflow_tap")

    assert outcome.state == "success"
    assert outcome.xcom("report") == "Datris loaded 42 order rows"
    (params,) = _params(datris)
    assert set(params) == {"since", "until"}
    assert params["since"] < params["until"]
