"""API keys and capabilities of the stand-in Datris, checked in the server's interceptor order.

``useApiKeys`` off (the default) lets everything through. With keys on, a sent key is resolved first
(503 when the key store is down, 401 when it is unknown or revoked, 403 when it lacks the route's
capability); a call without a key reaches the controller, whose ``validate()`` refuses it.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from datris_provider.testing.wire import Reply, controller_error

__all__ = ["ANONYMOUS", "FULL_ACCESS", "ApiKey", "Caller", "Capability", "KeyRing"]

# Scope keys the server accepts in a capability string (resource:action[:k=v,...]).
CAPABILITY_SCOPE_KEYS = frozenset({"catalog", "database", "collection", "destination_kind", "_type", "owner"})


@dataclass(frozen=True)
class Capability:
    """One capability string ``resource:action[:k=v,...]`` (``*`` is a wildcard)."""

    resource: str
    action: str
    scope: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Capability:
        """Parse a capability string; ValueError says what is wrong with it."""
        parts = text.strip().split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"capability {text!r} is not resource:action[:k=v,...]")
        scope: list[tuple[str, str]] = []
        if len(parts) == 3 and parts[2]:
            for pair in parts[2].split(","):
                key, separator, value = pair.partition("=")
                if not separator or key not in CAPABILITY_SCOPE_KEYS:
                    raise ValueError(f"capability {text!r} has an invalid scope entry {pair!r}")
                scope.append((key, value))
        return cls(parts[0], parts[1], tuple(scope))

    def covers(self, resource: str, action: str) -> bool:
        """Resource and action match (scope ignored, as in the interceptor's check)."""
        return self.resource in ("*", resource) and self.action in ("*", action)

    @property
    def owner_scope(self) -> str | None:
        """The ``owner=`` scope value, if the capability has one."""
        return dict(self.scope).get("owner")


FULL_ACCESS = (Capability("*", "*"),)


@dataclass(frozen=True)
class ApiKey:
    """A registered key: its secret value, label, capabilities and whether it was revoked."""

    value: str
    label: str
    capabilities: tuple[Capability, ...]
    revoked: bool = False


@dataclass(frozen=True)
class Caller:
    """Who a request runs as once its key is resolved."""

    label: str
    capabilities: tuple[Capability, ...]

    def holds(self, capability: str) -> bool:
        """Some capability covers ``resource:action`` (scope ignored)."""
        resource, action = capability.split(":", 1)
        return any(cap.covers(resource, action) for cap in self.capabilities)

    def owner_allowed(self, resource: str, action: str, owner: str | None) -> bool:
        """The controller's owner-scope check: some matching capability must accept this owner."""
        for cap in self.capabilities:
            if not cap.covers(resource, action):
                continue
            owner_scope = cap.owner_scope
            if owner_scope is None:
                return True
            wanted = self.label if owner_scope == "self" else owner_scope
            if owner is not None and owner == wanted:
                return True
        return False


ANONYMOUS = Caller("anonymous", FULL_ACCESS)


class KeyRing:
    """The ``useApiKeys`` switch, the registered keys and the key store's health."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Keys off, the key store up, no keys registered."""
        with self._lock:
            self.keys_required = False
            self.store_down = False
            self._keys: dict[str, ApiKey] = {}

    def add(self, value: str, label: str, capabilities: tuple[str, ...] | list[str], revoked: bool) -> None:
        """Register (or replace) a key; a malformed capability string raises ValueError."""
        parsed = tuple(Capability.parse(text) for text in capabilities)
        with self._lock:
            self._keys[value] = ApiKey(value, label, parsed, revoked)

    def revoke(self, value: str) -> None:
        """Mark a registered key as revoked (KeyError if unknown)."""
        with self._lock:
            self._keys[value] = dataclasses.replace(self._keys[value], revoked=True)

    def find(self, value: str | None) -> ApiKey | None:
        """The registered key with this value, if any."""
        if value is None:
            return None
        with self._lock:
            return self._keys.get(value)

    def authorize(
        self,
        *,
        method: str,
        path: str,
        full_path: str,
        api_key_value: str | None,
        required: str | None,
        checks_key: bool,
        error_style: str,
    ) -> Caller | Reply:
        """Resolve the caller of one request, or the answer that refuses it.

        :param required: the route's capability (None: the interceptor does not check one).
        :param checks_key: False for a controller that never calls ``validate()`` (lineage).
        """
        if not self.keys_required:
            return ANONYMOUS
        api_key = self.find(api_key_value)

        if path == "/mcp/tools":
            # The MCP tools controller validates the key itself, with its own message.
            if api_key_value is not None and self.store_down:
                return Reply.json({"error": "API key metadata unavailable"}, 503)
            if api_key is None or api_key.revoked:
                return Reply.json({"error": "x-api-key does not exist or is invalid"}, 401)
            return Caller(api_key.label, api_key.capabilities)

        if api_key_value is not None:
            if self.store_down:
                return Reply.json({"error": "API key metadata unavailable"}, 503)
            if api_key is None or api_key.revoked:
                if error_style == "stacktrace":
                    # Older servers have no interceptor for this: the controller's validate() throws.
                    return controller_error(error_style, "Invalid x-api-key", path)
                return Reply.json({"error": "API key is revoked or invalid"}, 401)
            caller = Caller(api_key.label, api_key.capabilities)
            if required is not None and not caller.holds(required):
                return _capability_denied(caller, required, f"{method} {full_path}")
            return caller

        # No key: the interceptors let the call through and the controller's validate() throws,
        # except in a controller that never calls validate().
        if not checks_key:
            return ANONYMOUS
        if error_style == "json":
            return Reply.json({"error": "Authentication required"}, 401)
        return controller_error(error_style, "x-api-key does not exist or is invalid", path)


def _capability_denied(caller: Caller, required: str, route: str) -> Reply:
    return Reply.json(
        {
            "error": "capability denied",
            "errorKind": "capability_denied",
            "key": caller.label,
            "required": required,
            "route": route,
            "message": (
                f"API key '{caller.label}' does not hold capability '{required}'. "
                "Grant the capability to this key or call with a key that holds it."
            ),
        },
        403,
    )
