"""Checks on ``tap_params`` made before any call, so a bad value never reaches a run."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from datris_provider.client.errors import DatrisConfigError

# The server fails the run (with HTTP 200) on any other key; it becomes DATRIS_TAP_PARAM_<key>.
PARAM_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_tap_params(params: Any, *, owner: str = "tap_params") -> dict[str, Any]:
    """Return ``params`` as a plain dict, or raise naming the key to fix.

    :param params: the rendered ``tap_params`` (``None`` means no parameters).
    :param owner: how the error names where the params came from.
    """
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise DatrisConfigError(f"{owner} must be a dict of parameters, not {type(params).__name__}.")
    checked: dict[str, Any] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not PARAM_KEY_PATTERN.match(key.strip()):
            raise DatrisConfigError(
                f"{owner} key {key!r} is not a valid Datris parameter name: it becomes the environment "
                "variable DATRIS_TAP_PARAM_<key>, so use letters, digits and underscores, not starting "
                "with a digit."
            )
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise DatrisConfigError(
                f"{owner} value for key '{key}' is a {type(value).__name__}, which cannot be sent as JSON "
                f"({err}). Convert it to a string, number, boolean, list or dict."
            ) from None
        checked[key.strip()] = value
    return checked
