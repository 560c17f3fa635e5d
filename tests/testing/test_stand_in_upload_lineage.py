"""Tests of the stand-in's ``POST /pipeline/upload`` and lineage routes against the Datris API contract.

Plain pytest + requests (no Airflow). Job lifecycles are driven by status polls, never by the clock.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests

from datris_provider.testing import RecordedUpload, StandInDatris, StandInPipeline

if TYPE_CHECKING:
    from collections.abc import Iterator

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CSV = b"id,amount\n1,9.50\n2,10.75\n3,12.00\n"


@pytest.fixture(scope="module")
def shared_server() -> Iterator[StandInDatris]:
    # A manual clock: jobs move only when a test advances time.
    with StandInDatris(clock="manual") as server:
        yield server


@pytest.fixture
def datris(shared_server: StandInDatris) -> Iterator[StandInDatris]:
    shared_server.reset_state()
    yield shared_server
    shared_server.wait_until_idle(timeout=10)


def call(datris: StandInDatris, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, datris.api_url + path, timeout=10, **kwargs)


def upload(
    datris: StandInDatris,
    pipeline: str | None,
    *,
    filename: str = "invoices.csv",
    content: bytes = CSV,
    publishertoken: str | None = None,
    pipeline_in_query: bool = False,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    data: dict[str, str] = {}
    params: dict[str, str] = {}
    if pipeline is not None:
        (params if pipeline_in_query else data)["pipeline"] = pipeline
    if publishertoken is not None:
        data["publishertoken"] = publishertoken
    files = {"file": (filename, content, "text/csv")}
    return call(datris, "POST", "/pipeline/upload", data=data, params=params, files=files, headers=headers)


def poll(datris: StandInDatris, **params: str) -> dict[str, Any]:
    response = call(datris, "GET", "/pipeline/status", params={**params, "withrollup": "true"})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def steps(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(event["processName"], event["state"], event["code"]) for event in events]


def assert_spring_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"timestamp", "status", "error", "path"}
    assert body["status"] == status
    assert body["path"] == "/api/v1/pipeline/upload"


# ------------------------------------------------------------------------------------------------
# POST /pipeline/upload
# ------------------------------------------------------------------------------------------------


def test_upload_answers_the_bare_token_and_the_job_follows_the_polls(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices", loader="SnowflakeLoader")
    publisher = str(uuid.uuid4())

    response = upload(datris, "invoices", publishertoken=publisher)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    token = response.text
    assert UUID4.match(token), "plain text, not a JSON string"
    # Staging happened inside the request: three StreamNotifier events, the job still queued.
    staged = datris.events(publisher)
    assert steps(staged) == [
        ("StreamNotifier", "begin", "info"),
        ("StreamNotifier", "processing", "info"),
        ("StreamNotifier", "end", "info"),
    ]
    assert staged[0]["description"] == "Stream data received, pipeline: invoices, filename: invoices.csv"
    assert staged[1]["description"] == f"Total data size: {len(CSV)}"
    assert {event["filename"] for event in staged} == {"stream: invoices"}
    assert {event["pipelineToken"] for event in staged} == {token}
    assert {event["publisherToken"] for event in staged} == {publisher}
    job = datris.job(token)
    assert (job.state, job.publisher_token, job.pipeline, job.tap_name) == ("INITIALIZED", publisher, "invoices", "")
    assert (job.filename, job.record_count, job.data_type) == ("invoices.csv", 3, "csv")

    datris.clock.advance(5)  # the scheduler's next tick starts the job
    first = poll(datris, publishertoken=publisher)
    assert steps(first["events"])[-1] == ("JobRunner", "begin", "info")
    assert first["rollup"]["allDone"] is False
    assert first["rollup"]["jobs"][0]["status"] == "processing"
    assert datris.job(token).state == "PROCESSING"

    datris.clock.advance(2)  # the default 2 s job
    second = poll(datris, publishertoken=publisher)
    assert steps(second["events"])[-2:] == [("SnowflakeLoader", "processing", "info"), ("JobRunner", "end", "info")]
    assert second["events"][-2]["description"] == "Loaded 3 records"
    assert second["rollup"]["allDone"] is True
    assert second["rollup"]["status"] == "success"
    assert second["rollup"]["jobs"][0]["filename"] == "stream: invoices"


def test_upload_is_recorded_without_keeping_the_file(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices")
    publisher = str(uuid.uuid4())

    upload(datris, "invoices", publishertoken=publisher, filename="big.csv", content=CSV * 1000)

    expected = RecordedUpload(
        pipeline="invoices", filename="big.csv", size=len(CSV) * 1000, publishertoken=publisher, content_type="text/csv"
    )
    assert datris.uploads == [expected]
    (recorded,) = datris.calls("POST /pipeline/upload")
    assert recorded.json is None
    assert recorded.upload == expected
    assert recorded.form == {"pipeline": "invoices", "publishertoken": publisher}
    assert recorded.headers["content-type"].startswith("multipart/form-data")


def test_a_file_larger_than_memory_spooling_is_counted_exactly(datris: StandInDatris) -> None:
    datris.add_pipeline("blobs", data_type="unstructured")
    content = b"x" * (3 * 1024 * 1024 + 17)  # several upload chunks and above werkzeug's spooling threshold

    response = upload(datris, "blobs", filename="blob.bin", content=content)

    assert response.status_code == 200
    assert datris.uploads[0].size == len(content)
    assert datris.events(response.text)[1]["description"] == f"Total data size: {len(content)}"
    assert datris.job(response.text).record_count == 1  # one line, no header for a non-CSV pipeline


def test_without_publishertoken_the_publisher_token_is_the_pipeline_token(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices", job_seconds=1.0)

    response = upload(datris, "invoices", pipeline_in_query=True)
    datris.clock.advance(6)  # the scheduler tick (5 s), then the 1 s job

    token = response.text
    assert datris.job(token).publisher_token == token
    assert datris.calls("POST /pipeline/upload")[0].query == {"pipeline": "invoices"}
    by_pipeline_token = poll(datris, pipelinetoken=token)
    assert by_pipeline_token["rollup"]["status"] == "success"
    assert poll(datris, publishertoken=token)["events"] == by_pipeline_token["events"]


def test_several_uploads_share_the_publisher_token_the_client_chose(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices", outcome="error", error="Process completed, error: bad row 2")
    datris.add_pipeline("payments", outcome="warning")
    publisher = str(uuid.uuid4())

    tokens = [upload(datris, name, publishertoken=publisher).text for name in ("invoices", "payments")]
    datris.clock.advance(7)  # the scheduler tick, then the default 2 s jobs
    rollup = poll(datris, publishertoken=publisher)["rollup"]

    assert [job.pipeline_token for job in datris.jobs(publisher)] == tokens
    assert rollup["allDone"] is True
    assert rollup["status"] == "error"
    statuses = {job["pipeline"]: job["status"] for job in rollup["jobs"]}
    assert statuses == {"invoices": "error", "payments": "warning"}
    invoices_job = next(job for job in rollup["jobs"] if job["pipeline"] == "invoices")
    assert invoices_job["lastError"]["description"] == "Process completed, error: bad row 2"


def test_a_tap_target_pipeline_is_registered_implicitly(datris: StandInDatris) -> None:
    tap = datris.add_tap(name="orders_api", target_pipeline="orders")

    assert upload(datris, "orders").status_code == 200
    assert datris.pipeline("orders") == StandInPipeline("orders")
    # Retargeting the live tap object registers the new pipeline as well.
    tap.target_pipeline = "orders_v2"
    assert upload(datris, "orders_v2").status_code == 200


@pytest.mark.parametrize("error_style", ["json", "stacktrace"])
def test_unregistered_pipeline_is_a_500_and_writes_an_error_event(datris: StandInDatris, error_style: str) -> None:
    datris.error_style = error_style
    message = "Pipeline 'ghost' is not registered. Use POST /api/v1/pipeline to register it first."

    response = upload(datris, "ghost", publishertoken=str(uuid.uuid4()))

    assert response.status_code == 500
    if error_style == "json":
        assert response.json() == {"error": message}
    else:
        assert response.text.splitlines()[0] == f"java.lang.IllegalArgumentException: {message}"
        assert "FileUploadAPIController" in response.text
    # The controller has no job yet: the event carries empty tokens and filename=<pipeline>.
    (event,) = datris.events("")
    assert event["filename"] == "ghost"
    assert (event["processName"], event["state"], event["code"]) == ("FileUploadAPIController", "end", "error")
    assert event["description"] == message
    assert (event["publisherToken"], event["pipelineToken"]) == ("", "")


def test_missing_file_or_pipeline_gets_springs_400(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices")

    no_file = call(datris, "POST", "/pipeline/upload", files={"pipeline": (None, "invoices")})
    assert_spring_error(no_file, 400)
    not_a_file = call(datris, "POST", "/pipeline/upload", files={"pipeline": (None, "x"), "file": (None, "text")})
    assert_spring_error(not_a_file, 400)
    assert_spring_error(upload(datris, None), 400)
    # A body that is not multipart at all fails while Spring binds the MultipartFile.
    assert_spring_error(call(datris, "POST", "/pipeline/upload", json={"pipeline": "invoices"}), 500)
    assert datris.events("") == []  # nothing reached the controller
    assert call(datris, "GET", "/pipeline/upload").status_code == 405


def test_upload_needs_the_document_upload_capability(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices")
    datris.require_api_keys()
    datris.add_api_key("airflow-key", label="airflow", capabilities=("tap:read", "tap:run", "job:read", "job:kill"))
    datris.add_api_key("uploader-key", label="uploader", capabilities=("document:upload",))

    denied = upload(datris, "invoices", headers={"x-api-key": "airflow-key"})
    assert denied.status_code == 403
    body = denied.json()
    assert (body["errorKind"], body["key"], body["required"]) == ("capability_denied", "airflow", "document:upload")
    assert body["route"] == "POST /api/v1/pipeline/upload"
    # The interceptor runs before parameter binding: a request without a file is denied the same way.
    no_file = call(
        datris, "POST", "/pipeline/upload", files={"pipeline": (None, "invoices")}, headers={"x-api-key": "airflow-key"}
    )
    assert no_file.status_code == 403

    allowed = upload(datris, "invoices", headers={"x-api-key": "uploader-key"})
    assert allowed.status_code == 200
    assert UUID4.match(allowed.text)
    assert upload(datris, "invoices").json() == {"error": "Authentication required"}


def test_a_file_over_the_size_limit_gets_413(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices")
    datris.max_upload_bytes = len(CSV)
    datris.require_api_keys()  # the limit applies before any key is looked at

    too_large = upload(datris, "invoices", content=CSV + b"4,1.00\n")

    assert too_large.status_code == 413
    assert too_large.json()["error"].startswith("File too large")
    assert datris.uploads[0].size == len(CSV) + 7  # still recorded
    assert datris.events("") == []
    datris.require_api_keys(False)
    assert upload(datris, "invoices", content=CSV).status_code == 200  # exactly at the limit
    datris.reset_state()
    assert datris.max_upload_bytes == 1024**3


def test_archives_follow_the_controllers_rules(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices", archive_entries=3)  # a CSV pipeline
    datris.add_pipeline("events", data_type="json", archive_entries=["a.json", "b.json"])
    datris.add_pipeline("empty", archive_entries=0)
    publisher = str(uuid.uuid4())

    joined = upload(datris, "invoices", filename="month.zip", content=b"PK-zip-bytes")
    assert UUID4.match(joined.text)
    begin = datris.events(joined.text)[0]["description"]
    assert begin == "Stream data received, pipeline: invoices, filename: month-1.csv"

    split = upload(datris, "events", filename="events.tar", content=b"tar-bytes", publishertoken=publisher)
    assert split.text == "2 file(s) submitted"
    assert [job.filename for job in datris.jobs(publisher)] == ["a.json", "b.json"]

    # Even a single-entry archive answers with a count and no token.
    gz_publisher = str(uuid.uuid4())
    gz = upload(datris, "invoices", filename="day.csv.GZ", content=b"gz-bytes", publishertoken=gz_publisher)
    assert gz.text == "1 file(s) submitted"
    assert [job.filename for job in datris.jobs(gz_publisher)] == ["day.csv"]

    nothing = upload(datris, "empty", filename="void.zip", content=b"PK")
    assert nothing.status_code == 500
    assert nothing.json() == {"error": "No files found in archive: void.zip"}


def test_upload_faults_are_injected_by_route(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices")
    datris.fail("POST /pipeline/upload", 502, body="Bad Gateway", headers={"Content-Type": "text/plain"})

    failed = upload(datris, "invoices")
    assert (failed.status_code, failed.text) == (502, "Bad Gateway")
    assert datris.calls("POST /pipeline/upload")[0].fault == "fail"
    assert upload(datris, "invoices").status_code == 200
    assert len(datris.uploads) == 2


def test_add_pipeline_validates_and_defaults_the_dataset(datris: StandInDatris) -> None:
    assert datris.add_pipeline("orders").dataset == "postgres:datris.public.orders"
    assert datris.add_pipeline("scratch", dataset=None).dataset is None
    with pytest.raises(ValueError, match="outcome"):
        datris.add_pipeline("bad", outcome="cancelled")
    with pytest.raises(KeyError):
        datris.pipeline("never_registered")


# ------------------------------------------------------------------------------------------------
# Lineage
# ------------------------------------------------------------------------------------------------


def add_lineage_config(datris: StandInDatris) -> None:
    datris.add_tap(name="crm_customers", source="postgres:crm.public.customers", target_pipeline="customers")
    datris.add_tap(name="orders_api", target_pipeline="orders")
    datris.add_pipeline("customers", catalog="sales", dataset="snowflake:analytics.public.customers")


def test_lineage_graph_is_built_from_taps_and_pipelines(datris: StandInDatris) -> None:
    add_lineage_config(datris)

    response = call(datris, "GET", "/lineage")

    assert response.status_code == 200
    graph = response.json()
    assert graph["nodes"] == [
        {"id": "tap:crm_customers", "type": "tap", "name": "crm_customers"},
        {"id": "source:postgres:crm.public.customers", "type": "source", "name": "postgres:crm.public.customers"},
        {"id": "tap:orders_api", "type": "tap", "name": "orders_api"},
        {"id": "source:tap:orders_api", "type": "source", "name": "tap:orders_api"},
        {"id": "pipeline:customers", "type": "pipeline", "name": "customers", "catalog": "sales"},
        {
            "id": "dataset:snowflake:analytics.public.customers",
            "type": "dataset",
            "name": "snowflake:analytics.public.customers",
            "catalog": "sales",
            "authority": "authoritative",
        },
        {"id": "catalog:sales", "type": "catalog", "name": "sales"},
        {"id": "pipeline:orders", "type": "pipeline", "name": "orders"},
        {
            "id": "dataset:postgres:datris.public.orders",
            "type": "dataset",
            "name": "postgres:datris.public.orders",
            "authority": "authoritative",
        },
    ]
    assert graph["edges"] == [
        {"from": "source:postgres:crm.public.customers", "to": "tap:crm_customers"},
        {"from": "tap:crm_customers", "to": "pipeline:customers"},
        {"from": "source:tap:orders_api", "to": "tap:orders_api"},
        {"from": "tap:orders_api", "to": "pipeline:orders"},
        {"from": "pipeline:customers", "to": "dataset:snowflake:analytics.public.customers"},
        {"from": "dataset:snowflake:analytics.public.customers", "to": "catalog:sales"},
        {"from": "pipeline:orders", "to": "dataset:postgres:datris.public.orders"},
    ]


def test_a_dataset_written_by_two_pipelines_has_undeclared_authority(datris: StandInDatris) -> None:
    datris.add_pipeline("a", dataset="postgres:datris.public.shared")
    datris.add_pipeline("b", dataset="postgres:datris.public.shared")

    graph = call(datris, "GET", "/lineage").json()

    datasets = [node for node in graph["nodes"] if node["type"] == "dataset"]
    assert datasets == [
        {
            "id": "dataset:postgres:datris.public.shared",
            "type": "dataset",
            "name": "postgres:datris.public.shared",
            "authority": "undeclared",
        }
    ]
    assert [edge["from"] for edge in graph["edges"]] == ["pipeline:a", "pipeline:b"]


def test_lineage_node_neighbourhood_by_direction_and_depth(datris: StandInDatris) -> None:
    add_lineage_config(datris)

    both = call(datris, "GET", "/lineage/tap/crm_customers").json()
    assert both["node"] == {"id": "tap:crm_customers", "type": "tap", "name": "crm_customers"}
    assert [node["id"] for node in both["upstream"]] == ["source:postgres:crm.public.customers"]
    assert [node["id"] for node in both["downstream"]] == [
        "pipeline:customers",
        "dataset:snowflake:analytics.public.customers",
        "catalog:sales",
    ]
    assert len(both["edges"]) == 4
    assert both["freshness"] == {"state": "unknown"}

    shallow = call(datris, "GET", "/lineage/tap/crm_customers", params={"direction": "down", "depth": "1"}).json()
    assert shallow["upstream"] == []
    assert [node["id"] for node in shallow["downstream"]] == ["pipeline:customers"]
    assert shallow["edges"] == [{"from": "tap:crm_customers", "to": "pipeline:customers"}]

    up = call(
        datris, "GET", "/lineage/DATASET/snowflake:analytics.public.customers", params={"direction": " UP "}
    ).json()
    assert [node["id"] for node in up["upstream"]] == [
        "pipeline:customers",
        "tap:crm_customers",
        "source:postgres:crm.public.customers",
    ]
    assert up["downstream"] == []
    assert "runs" not in up
    with_runs = call(datris, "GET", "/lineage/catalog/sales", params={"runs": "5", "depth": "-3"}).json()
    assert with_runs["runs"] == []
    assert len(with_runs["upstream"]) == 4  # a negative depth means "all"


def test_lineage_freshness_reports_the_last_landed_job(datris: StandInDatris) -> None:
    datris.add_pipeline("invoices", job_seconds=1.0)
    token = upload(datris, "invoices").text
    assert call(datris, "GET", "/lineage/pipeline/invoices").json()["freshness"] == {"state": "unknown"}

    datris.clock.advance(6)  # the job ends on its own; nobody polls it
    freshness = call(datris, "GET", "/lineage/pipeline/invoices").json()["freshness"]

    assert freshness["state"] == "fresh"
    assert (freshness["latestRunId"], freshness["recordCount"]) == (token, 3)
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$", freshness["lastLandedAt"])


def test_lineage_errors(datris: StandInDatris) -> None:
    add_lineage_config(datris)

    unknown = call(datris, "GET", "/lineage/tap/x")
    assert unknown.status_code == 404
    assert unknown.text == '{"error":"no such node: tap:x"}'
    bad_type = call(datris, "GET", "/lineage/table/customers")
    assert (bad_type.status_code, bad_type.json()) == (
        400,
        {"error": "type must be one of source, tap, pipeline, dataset, catalog"},
    )
    bad_direction = call(datris, "GET", "/lineage/tap/crm_customers", params={"direction": "sideways"})
    assert (bad_direction.status_code, bad_direction.json()) == (
        400,
        {"error": "direction must be one of up, down, both"},
    )
    bad_depth = call(datris, "GET", "/lineage/tap/crm_customers", params={"depth": "deep"})
    assert bad_depth.status_code == 400
    assert set(bad_depth.json()) == {"timestamp", "status", "error", "path"}
    assert call(datris, "GET", "/lineage/tap/crm_customers/extra").status_code == 404
    assert call(datris, "POST", "/lineage", json={}).status_code == 405


def test_column_lineage_route(datris: StandInDatris) -> None:
    add_lineage_config(datris)

    known = call(datris, "GET", "/lineage/columns/customers")
    assert known.status_code == 200
    assert known.json()["pipeline"] == "customers"
    missing = call(datris, "GET", "/lineage/columns/nope")
    assert (missing.status_code, missing.json()) == (404, {"error": "no such pipeline: nope"})


def test_lineage_needs_no_key_but_rejects_a_bad_one(datris: StandInDatris) -> None:
    add_lineage_config(datris)
    datris.require_api_keys()
    datris.add_api_key("narrow", label="narrow", capabilities=("job:read",))

    assert call(datris, "GET", "/lineage").status_code == 200
    assert call(datris, "GET", "/lineage/tap/orders_api").status_code == 200
    assert call(datris, "GET", "/lineage", headers={"x-api-key": "narrow"}).status_code == 200
    rejected = call(datris, "GET", "/lineage", headers={"x-api-key": "unknown"})
    assert (rejected.status_code, rejected.json()) == (401, {"error": "API key is revoked or invalid"})
    datris.error_style = "stacktrace"
    assert call(datris, "GET", "/lineage/tap/orders_api").status_code == 200


def test_an_older_server_without_lineage_answers_404(datris: StandInDatris) -> None:
    add_lineage_config(datris)
    datris.has_lineage = False

    for path in ("/lineage", "/lineage/tap/orders_api", "/lineage/columns/orders", "/lineage/a/b/c"):
        response = call(datris, "GET", path)
        assert response.status_code == 404, path
        assert response.json()["path"] == "/api/v1" + path
    datris.reset_state()
    assert datris.has_lineage is True


def test_has_lineage_constructor_flag() -> None:
    with StandInDatris(has_lineage=False) as server:
        assert requests.get(server.api_url + "/lineage", timeout=10).status_code == 404
        server.reset_state()
        assert server.has_lineage is False
