"""Lineage routes: ``GET /lineage`` (the whole graph) and ``GET /lineage/{type}/{name}``.

The graph is built from configuration: source → tap → pipeline → dataset → catalog. The lineage
controller never validates a key.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from datris_provider.testing.rollup import job_rollup
from datris_provider.testing.wire import Reply, drop_nulls, iso_instant, spring_error

if TYPE_CHECKING:
    from collections.abc import Mapping

    from datris_provider.testing.auth import Caller
    from datris_provider.testing.model import StandInJob
    from datris_provider.testing.routes.base import RouteContext
    from datris_provider.testing.serving import Call
    from datris_provider.testing.state import StandInState

__all__ = ["LINEAGE_ROOT", "get_lineage", "get_lineage_path", "lineage_graph"]

LINEAGE_ROOT = "/lineage"
LINEAGE_NODE_TYPES = ("source", "tap", "pipeline", "dataset", "catalog")
LINEAGE_DIRECTIONS = ("up", "down", "both")
LINEAGE_FRESHNESS_WINDOW_MS = 30 * 24 * 60 * 60 * 1000


def lineage_graph(state: StandInState) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """LineageService.build from the current configuration (lock held): nodes and edges, in order.

    Taps first (each with its source), then pipelines with their dataset and catalog. Edges whose
    end is not a node are dropped, like the server does for a tap pointing at a missing pipeline.
    """
    state.register_tap_pipelines_locked()
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []

    def add_node(node_type: str, name: str, **attributes: Any) -> str:
        node_id = f"{node_type}:{name}"
        if node_id not in nodes:
            nodes[node_id] = drop_nulls({"id": node_id, "type": node_type, "name": name, **attributes})
        return node_id

    def add_edge(source_id: str, target_id: str) -> None:
        edge = {"from": source_id, "to": target_id}
        if edge not in edges:
            edges.append(edge)

    for tap in state.taps.values():
        tap_id = add_node("tap", tap.name)
        source_id = add_node("source", tap.lineage_source)
        add_edge(source_id, tap_id)
        if tap.target_pipeline:
            add_edge(tap_id, f"pipeline:{tap.target_pipeline}")

    # A dataset written by one pipeline is authoritative; two claiming it make it undeclared.
    writers: dict[str, int] = {}
    for pipeline in state.pipelines.values():
        if pipeline.dataset:
            writers[pipeline.dataset] = writers.get(pipeline.dataset, 0) + 1
    for pipeline in state.pipelines.values():
        pipeline_id = add_node("pipeline", pipeline.name, catalog=pipeline.catalog)
        if not pipeline.dataset:
            continue
        authority = "authoritative" if writers[pipeline.dataset] == 1 else "undeclared"
        dataset_id = add_node("dataset", pipeline.dataset, catalog=pipeline.catalog, authority=authority)
        add_edge(pipeline_id, dataset_id)
        if pipeline.catalog:
            add_edge(dataset_id, add_node("catalog", pipeline.catalog))

    edges = [edge for edge in edges if edge["from"] in nodes and edge["to"] in nodes]
    return list(nodes.values()), edges


def get_lineage(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """``GET /lineage``: the configuration graph."""
    with context.state.lock:
        nodes, edges = lineage_graph(context.state)
    return Reply.json({"nodes": nodes, "edges": edges})


def get_lineage_path(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """``GET /lineage/{type}/{name}`` and ``GET /lineage/columns/{pipeline}``."""
    segments = call.path[len(LINEAGE_ROOT) + 1 :].split("/")
    if len(segments) != 2 or not all(segments):
        return spring_error(404, call.full_path)
    first, name = segments
    if first == "columns":
        return _get_column_lineage(context, call, name)
    return _get_lineage_node(context, call, first, name)


def _get_lineage_node(context: RouteContext, call: Call, raw_type: str, name: str) -> Reply:
    depth_text = call.query.get("depth")
    runs_text = call.query.get("runs")
    try:
        depth = int(depth_text) if depth_text not in (None, "") else 0
        runs = int(runs_text) if runs_text not in (None, "") else 0
    except ValueError:
        return spring_error(400, call.full_path)  # type mismatch while binding an Integer parameter
    node_type = raw_type.strip().lower()
    if node_type not in LINEAGE_NODE_TYPES:
        return _lineage_error(400, "type must be one of source, tap, pipeline, dataset, catalog")
    raw_direction = call.query.get("direction")
    direction = raw_direction.strip().lower() if raw_direction is not None else "both"
    if direction not in LINEAGE_DIRECTIONS:
        return _lineage_error(400, "direction must be one of up, down, both")

    node_id = f"{node_type}:{name}"
    with context.state.lock:
        nodes, edges = lineage_graph(context.state)
        by_id = {node["id"]: node for node in nodes}
        if node_id not in by_id:
            return _lineage_error(404, "no such node: " + node_id.replace('"', "'"))
        forward: dict[str, list[str]] = {}
        backward: dict[str, list[str]] = {}
        for edge in edges:
            forward.setdefault(edge["from"], []).append(edge["to"])
            backward.setdefault(edge["to"], []).append(edge["from"])
        max_hops = depth if depth > 0 else math.inf
        upstream = [] if direction == "down" else _walk(node_id, backward, max_hops)
        downstream = [] if direction == "up" else _walk(node_id, forward, max_hops)
        relevant = {node_id, *upstream, *downstream}
        result: dict[str, Any] = {
            "node": by_id[node_id],
            "upstream": [by_id[item] for item in upstream],
            "downstream": [by_id[item] for item in downstream],
            "edges": [edge for edge in edges if edge["from"] in relevant and edge["to"] in relevant],
        }
        if node_type == "pipeline":
            fed_pipeline: str | None = name
        else:
            fed_pipeline = next(
                (item[len("pipeline:") :] for item in [*upstream, *downstream] if item.startswith("pipeline:")),
                None,
            )
        if fed_pipeline is not None:
            result["freshness"] = _freshness(context.state, fed_pipeline)
    if runs > 0:
        result["runs"] = []  # recorded run lineage is not modelled
    return Reply.json(result)


def _freshness(state: StandInState, pipeline_name: str) -> dict[str, Any]:
    """The last successful landing of a pipeline within 30 days, from its job summaries (lock held)."""
    now_ms = state.now_ms()
    landed: list[tuple[int, StandInJob]] = []
    for job in state.jobs.values():
        job_events = state.events_by_pipeline.get(job.pipeline_token, [])
        if job.pipeline != pipeline_name or not job_events:
            continue
        created_ms = int(job_events[0]["epoch"])
        if created_ms < now_ms - LINEAGE_FRESHNESS_WINDOW_MS:
            continue
        if job_rollup(job_events, now_ms)["status"] in ("success", "warning"):
            landed.append((created_ms, job))
    if not landed:
        return {"state": "unknown"}
    created_ms, job = max(landed, key=lambda item: item[0])
    return {
        "lastLandedAt": iso_instant(created_ms),
        "recordCount": job.record_count,
        "latestRunId": job.pipeline_token,
        "state": "fresh",
    }


def _get_column_lineage(context: RouteContext, call: Call, pipeline_name: str) -> Reply:
    version_text = call.query.get("version")
    try:
        version = int(version_text) if version_text not in (None, "") else None
    except ValueError:
        return spring_error(400, call.full_path)
    with context.state.lock:
        context.state.register_tap_pipelines_locked()
        known = pipeline_name in context.state.pipelines
    if not known or (version is not None and version > 1):
        label = "no such pipeline version: " if version is not None else "no such pipeline: "
        return _lineage_error(404, label + pipeline_name.replace('"', "'"))
    # The deterministic tier of a pipeline with no declared schema: nothing to map.
    return Reply.json(
        {
            "pipeline": pipeline_name,
            "version": 1,
            "versionSource": "current",
            "sourceFields": [],
            "destinationFields": [],
            "destinationSchema": "none",
            "transformation": {"kind": "none"},
            "edges": [],
            "unresolved": [],
        }
    )


def _walk(start: str, neighbours: Mapping[str, list[str]], max_hops: float) -> list[str]:
    """Breadth-first ids reachable from ``start`` within ``max_hops`` hops, in discovery order."""
    seen: dict[str, None] = {}
    frontier = list(neighbours.get(start, []))
    hops = 1
    while frontier and hops <= max_hops:
        fresh = [item for item in dict.fromkeys(frontier) if item not in seen]
        seen.update(dict.fromkeys(fresh))
        frontier = [following for item in fresh for following in neighbours.get(item, [])]
        hops += 1
    return list(seen)


def _lineage_error(status: int, message: str) -> Reply:
    """The lineage controller writes its error bodies by hand (no Gson escaping)."""
    body = json.dumps({"error": message}, separators=(",", ":"), ensure_ascii=False)
    return Reply(status, body.encode("utf-8"))
