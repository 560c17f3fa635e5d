"""Service routes: ``GET /version`` (public, all strings) and the key check ``GET /mcp/tools``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datris_provider.testing.wire import Reply, seconds_text

if TYPE_CHECKING:
    from datris_provider.testing.auth import Caller
    from datris_provider.testing.routes.base import RouteContext
    from datris_provider.testing.serving import Call

__all__ = ["MCP_TOOLS", "get_mcp_tools", "get_version"]

DEFAULT_TAP_RUN_TIMEOUT_SECONDS = 3600
DEFAULT_TAP_SCRIPT_TIMEOUT_SECONDS = 300

# MCP tools and the capability each needs, for GET /mcp/tools.
MCP_TOOLS: tuple[tuple[str, str | None], ...] = (
    ("get_version", None),
    ("list_taps", "tap:read"),
    ("get_tap", "tap:read"),
    ("run_tap", "tap:run"),
    ("test_tap", "tap:run"),
    ("get_tap_logs", "job:read"),
    ("get_pipeline_status", "job:read"),
    ("kill_job", "job:kill"),
    ("upload_file", "document:upload"),
)


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
    """The tool names this key may use."""
    tools = [name for name, needed in MCP_TOOLS if needed is None or caller.holds(needed)]
    return Reply.json({"filtered": len(tools) < len(MCP_TOOLS), "tools": tools})
