"""Service routes: ``GET /version`` (public, all strings), ``GET /health/services`` and the key check
``GET /mcp/tools``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datris_provider.testing.auth import FULL_ACCESS
from datris_provider.testing.wire import Reply, seconds_text

if TYPE_CHECKING:
    from datris_provider.testing.auth import Caller
    from datris_provider.testing.routes.base import RouteContext
    from datris_provider.testing.serving import Call

__all__ = ["HEALTH_STATUSES", "MCP_TOOLS", "get_health_services", "get_mcp_tools", "get_version"]

DEFAULT_TAP_RUN_TIMEOUT_SECONDS = 3600
DEFAULT_TAP_SCRIPT_TIMEOUT_SECONDS = 300

# The MCP server's tool catalogue, in its order, with the capability (resource:action) of the REST
# route each tool calls first (None: a local helper or a public route, visible to every key). A key
# sees a tool when it holds that resource and action; scopes are checked only when the tool is used.
MCP_TOOLS: tuple[tuple[str, str | None], ...] = (
    ("list_pipelines", "pipeline:read"),
    ("get_pipeline", "pipeline:read"),
    ("create_pipeline", "pipeline:create"),
    ("set_catalog", "pipeline:create"),
    ("delete_pipeline", "pipeline:delete"),
    ("upload_data", "document:upload"),
    ("get_job_status", "job:read"),
    ("kill_job", "job:kill"),
    ("profile_data", "metadata:read"),
    ("get_dest_types", "pipeline:read"),
    ("apply_dest_types", "pipeline:update"),
    ("get_version", None),
    ("check_service_health", None),
    *((f"search_{store}", "search:vector") for store in ("qdrant", "weaviate", "milvus", "pgvector", "chroma")),
    *(
        (f"query_{store}", f"query:{store}")
        for store in ("postgres", "objectstore", "snowflake", "databricks", "mongodb", "natural")
    ),
    *(
        (f"list_{listing}", "metadata:read")
        for listing in (
            "postgres_databases",
            "postgres_schemas",
            "postgres_tables",
            "postgres_columns",
            "mongodb_databases",
            "mongodb_collections",
            "qdrant_collections",
            "weaviate_classes",
            "milvus_collections",
            "chroma_collections",
            "pgvector_collections",
        )
    ),
    ("ai_answer", "query:natural"),
    ("upload_config", "config:write"),
    ("update_secret", "secret:write"),
    ("list_tap_secrets", "secret:read"),
    ("get_tap_secret_fields", "secret:read"),
    ("list_platform_secrets", "secret:read"),
    ("get_platform_secret_fields", "secret:read"),
    ("create_tap_secret", "secret:write"),
    ("delete_tap_secret", "secret:write"),
    ("create_tap", "tap:create"),
    ("list_taps", "tap:read"),
    ("run_tap", "tap:run"),
    ("get_pipeline_status", "job:read"),
    ("delete_tap", "tap:delete"),
    ("get_tap", "tap:read"),
    ("get_tap_logs", "job:read"),
    ("get_tap_ledger", "tap:read"),
    ("get_tap_state", "tap:read"),
    ("set_tap_state", "tap:update"),
    ("test_tap", "tap:run"),
    ("update_tap", "tap:create"),
    ("list_tap_versions", "tap:read"),
    ("get_tap_version", "tap:read"),
    ("diff_tap_versions", "tap:read"),
    ("restore_tap_version", "tap:update"),
    ("list_pipeline_versions", "pipeline:read"),
    ("get_pipeline_version", "pipeline:read"),
    ("diff_pipeline_versions", "pipeline:read"),
    ("restore_pipeline_version", "pipeline:update"),
    ("wait_seconds", None),
    ("get_agent_policy", "policy:read"),
    ("list_pending_approvals", "approval:read"),
    ("get_approval", "approval:read"),
    ("list_incidents", "incident:read"),
    ("get_incident", "incident:read"),
)

HEALTH_STATUSES = ("up", "down", "not_configured")


def _limit_source(value: float, default: float) -> str:
    return "default" if value == default else "env"


def get_version(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """The flat version object; older servers lack the time limits and the newer flags."""
    settings = context.settings
    info = {
        "version": settings.version,
        "environment": "oss",
        "multiTenant": "false",
        "hosted": "false",
        "useUserAuth": "false",
        "useApiKeys": "true" if context.keys.keys_required else "false",
        "useAuditLog": "true",
        "postgresDatabase": "datris",
        "mongodbDatabase": "datris",
        "useTapRunner": "true",
    }
    if not settings.legacy_version:
        run_limit, script_limit = settings.tap_run_timeout_seconds, settings.tap_script_timeout_seconds
        info.update(
            {
                "useAgentPolicy": "false",
                "recoveryAgentEnabled": "false",
                "tapRunTimeoutSeconds": seconds_text(run_limit),
                "tapRunTimeoutSecondsSource": _limit_source(run_limit, DEFAULT_TAP_RUN_TIMEOUT_SECONDS),
                "tapScriptTimeoutSeconds": seconds_text(script_limit),
                "tapScriptTimeoutSecondsSource": _limit_source(script_limit, DEFAULT_TAP_SCRIPT_TIMEOUT_SECONDS),
                "pipelineMaxPayloadMB": "4096",
                "pipelineMaxPayloadMBSource": "default",
                "oidcEnabled": "false",
            }
        )
    return Reply.json(info)


def get_mcp_tools(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """The tool names this key may see: the whole catalogue for a full-access key (and with keys off),
    else the tools whose first REST call the key's capabilities allow."""
    if caller.capabilities == FULL_ACCESS:
        return Reply.json({"filtered": False, "tools": [name for name, _ in MCP_TOOLS]})
    tools = [name for name, needed in MCP_TOOLS if needed is None or caller.holds(needed)]
    return Reply.json({"filtered": True, "tools": tools})


def get_health_services(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """``GET /health/services``: each backend's status (``up``, ``down`` or ``not_configured``)."""
    with context.state.lock:
        services = {name: dict(health) for name, health in context.state.service_health.items()}
    return Reply.json(services)
