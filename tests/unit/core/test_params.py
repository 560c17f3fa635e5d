from __future__ import annotations

from datetime import date

import pytest

from datris_provider.client.errors import DatrisConfigError
from datris_provider.core.params import validate_tap_params


def test_none_means_no_params():
    assert validate_tap_params(None) == {}


def test_plain_json_values_pass_and_keys_are_trimmed():
    params = {" since": "2026-05-01", "limit": 1000, "ratio": 0.5, "full": False, "ids": [1], "w": {"a": None}}
    assert validate_tap_params(params) == {
        "since": "2026-05-01",
        "limit": 1000,
        "ratio": 0.5,
        "full": False,
        "ids": [1],
        "w": {"a": None},
    }


@pytest.mark.parametrize("key", ["bad-key", "1st", "has space", "", "ünïcode", 7])
def test_key_the_server_would_reject_is_named(key):
    with pytest.raises(DatrisConfigError) as err:
        validate_tap_params({key: "x"})
    assert repr(key) in str(err.value)
    assert "DATRIS_TAP_PARAM_" in str(err.value)


@pytest.mark.parametrize("value", [date(2026, 5, 1), {1, 2}, float("nan"), object()])
def test_value_that_is_not_json_is_named(value):
    with pytest.raises(DatrisConfigError) as err:
        validate_tap_params({"when": value})
    assert "key 'when'" in str(err.value)


def test_params_must_be_a_mapping():
    with pytest.raises(DatrisConfigError, match="must be a dict"):
        validate_tap_params(["since"])
