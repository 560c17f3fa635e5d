"""The Datris connection form in Airflow's UI, as the provider describes it."""

from __future__ import annotations

import pytest

from datris_provider import get_provider_info

(CONNECTION_TYPE,) = get_provider_info()["connection-types"]
FIELDS = CONNECTION_TYPE["conn-fields"]


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_extra_field_has_one_type_so_it_renders_as_a_plain_input(name):
    # Airflow 3.3's form turns a schema with more than one non-null type into a multi-line JSON box.
    types = FIELDS[name]["schema"]["type"]
    assert len([kind for kind in types if kind != "null"]) == 1, types


def test_verify_tls_is_a_switch_and_the_ca_bundle_a_path():
    assert FIELDS["verify"]["schema"]["type"] == ["boolean", "null"]
    assert FIELDS["ca_bundle"]["schema"]["type"] == ["string", "null"]


def test_port_is_shown_now_that_the_hook_uses_it():
    assert "port" not in CONNECTION_TYPE["ui-field-behaviour"]["hidden-fields"]
