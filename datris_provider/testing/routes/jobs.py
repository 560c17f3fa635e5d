"""``POST /job/kill``: cancel a running (PROCESSING) job; anything else is the server's 500."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datris_provider.testing.model import DatrisError
from datris_provider.testing.routes.base import json_object_body
from datris_provider.testing.wire import Reply

if TYPE_CHECKING:
    from datris_provider.testing.auth import Caller
    from datris_provider.testing.routes.base import RouteContext
    from datris_provider.testing.serving import Call

__all__ = ["kill_job"]


def kill_job(context: RouteContext, call: Call, caller: Caller) -> Reply:
    """Only ``pipelineToken`` is read; a queued, finished or already killed job cannot be killed."""
    body = json_object_body(call)
    if isinstance(body, Reply):
        return body
    token = body.get("pipelineToken")
    if token in (None, ""):
        raise DatrisError("'pipelineToken' parameter is required")
    token = str(token)
    with context.state.lock:
        context.state.kill_locked(token)
    return Reply.json({"status": "cancelled", "pipelineToken": token})
