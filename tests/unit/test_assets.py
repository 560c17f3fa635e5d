from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from datris_provider.assets import keep_outlets, pipeline_asset_uri, pipeline_of, sanitize_uri


def test_uri_round_trips_and_is_sanitised():
    uri = pipeline_asset_uri("orders v2", instance="eu")
    assert uri == "datris://eu/pipelines/orders%20v2"
    assert pipeline_of(uri) == "orders v2"
    assert sanitize_uri(urlsplit(uri)) == urlsplit(uri)


@pytest.mark.parametrize("uri", ["datris:///pipelines/x", "datris://eu/x", "datris://eu/pipelines/a/b"])
def test_malformed_uris_are_refused(uri):
    with pytest.raises(ValueError, match="datris://<instance>/pipelines/<pipeline>"):
        sanitize_uri(urlsplit(uri))


def _outlet(uri: str) -> SimpleNamespace:
    return SimpleNamespace(uri=uri)


def test_only_landed_runs_keep_their_datris_outlets():
    orders, other = _outlet(pipeline_asset_uri("orders")), _outlet("s3://bucket/key")
    assert keep_outlets([orders, other], "success", {"orders"})[0] == [orders, other]
    assert keep_outlets([orders, other], "warning", {"orders"})[0] == [orders, other]
    kept, notes = keep_outlets([orders, other], "no_records", set())
    assert kept == [other] and "no data landed" in notes[0]


def test_an_outlet_for_a_pipeline_the_run_did_not_feed_is_dropped():
    kept, notes = keep_outlets([_outlet(pipeline_asset_uri("customers"))], "success", {"orders"})
    assert kept == [] and "not 'customers'" in notes[0]
