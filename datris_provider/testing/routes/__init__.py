"""The stand-in's routes, one module per family, and the table that maps requests to them."""

from __future__ import annotations

from datris_provider.testing.routes import jobs, lineage, meta, status, taps, upload
from datris_provider.testing.routes.base import Route, RouteContext

__all__ = ["LINEAGE_SUBTREE", "ROUTES", "Route", "RouteContext", "find_route", "path_is_known", "route_template"]

# Lineage sub-paths carry path variables: they share one template.
LINEAGE_SUBTREE = lineage.LINEAGE_ROOT + "/**"

# Capabilities are CapabilityRoutes': None means the route is skipped or unmapped (let through).
ROUTES: tuple[Route, ...] = (
    Route("GET", "/tap", taps.get_tap, "tap:read"),
    Route("GET", "/taps", taps.get_taps, "tap:read"),
    Route("POST", "/tap/run", taps.run_tap, "tap:run", json_body=True),
    Route("POST", "/tap/test", taps.test_tap, "tap:run", json_body=True),
    Route("GET", "/tap/logs", taps.get_tap_logs, "job:read"),
    # Unmapped in CapabilityRoutes: let through, the key is still validated.
    Route("GET", "/tap/logs/all", taps.get_all_tap_logs),
    Route("GET", "/pipeline/status", status.get_pipeline_status, "job:read"),
    Route("POST", "/job/kill", jobs.kill_job, "job:kill", json_body=True),
    Route("POST", "/pipeline/upload", upload.upload_file, "document:upload"),
    Route("GET", "/version", meta.get_version, public=True),
    Route("GET", "/mcp/tools", meta.get_mcp_tools),
    Route("GET", "/health/services", meta.get_health_services, public=True),
    # Lineage is unmapped and its controller never calls validate(): no key needed.
    Route("GET", lineage.LINEAGE_ROOT, lineage.get_lineage, checks_key=False),
    Route("GET", LINEAGE_SUBTREE, lineage.get_lineage_path, checks_key=False),
)

_BY_KEY = {(route.method, route.template): route for route in ROUTES}


def route_template(path: str) -> str:
    """The route-table key of a path (``/api/v1`` already removed)."""
    if path.startswith(lineage.LINEAGE_ROOT + "/"):
        return LINEAGE_SUBTREE
    return path


def find_route(method: str, path: str) -> Route | None:
    """The route a request is for, or None when no route has this method and path."""
    return _BY_KEY.get((method, route_template(path)))


def path_is_known(path: str) -> bool:
    """Some route serves this path (with another method: Spring answers 405)."""
    template = route_template(path)
    return any(route.template == template for route in ROUTES)
