"""A downstream DAG scheduled on a Datris pipeline asset runs only when the tap's data landed."""

from __future__ import annotations

import pytest

from datris_provider.assets import pipeline_asset_uri

pytestmark = pytest.mark.dag

ORDERS_URI = pipeline_asset_uri("orders")


def _asset_events(uri: str) -> int:
    from airflow import settings
    from airflow.models.asset import AssetEvent, AssetModel

    session = settings.Session()
    try:
        return (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == uri)
            .count()
        )
    finally:
        session.close()


def _consumer_queued() -> bool:
    from airflow import settings
    from airflow.models.asset import AssetDagRunQueue

    session = settings.Session()
    try:
        return session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == "orders_consumer").count() > 0
    finally:
        session.close()


def _clear_queue() -> None:
    from airflow import settings
    from airflow.models.asset import AssetDagRunQueue

    session = settings.Session()
    session.query(AssetDagRunQueue).delete()
    session.commit()
    session.close()


@pytest.fixture
def consumer_known(datris_dag_runner):
    # The consumer DAG must be in the metadata DB for Airflow to queue it on an asset event.
    datris_dag_runner.run("orders_consumer")
    _clear_queue()


def test_landed_data_emits_the_asset_event_and_queues_the_consumer(datris, datris_dag_runner, consumer_known):
    before = _asset_events(ORDERS_URI)

    outcome = datris_dag_runner.run("orders_producer")

    assert outcome.state == "success"
    assert _asset_events(ORDERS_URI) == before + 1
    assert _consumer_queued()


@pytest.mark.parametrize(
    ("dag_id", "state"), [("orders_producer_empty", "success"), ("orders_producer_failing", "failed")]
)
def test_no_asset_event_when_nothing_landed(datris, datris_dag_runner, consumer_known, dag_id, state):
    before = _asset_events(ORDERS_URI)

    outcome = datris_dag_runner.run(dag_id)

    assert outcome.state == state
    assert _asset_events(ORDERS_URI) == before
    assert not _consumer_queued()
