"""Client settings from a connection's fields: every mistake refused with what to fix, the key never shown."""

from __future__ import annotations

import pytest

from datris_provider.client.errors import DatrisConfigError
from datris_provider.client.settings import settings_from_connection_fields

SECRET = "s3cret-9f8e7d"


def _settings(host="https://datris.example.com", password=None, port=None, conn_id="datris_default", **extra):
    return settings_from_connection_fields(conn_id=conn_id, host=host, port=port, password=password, extra=extra)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (None, "has no Host"),
        ("  ", "has no Host"),
        ("datris.example.com", "has no http:// or https:// scheme"),
        ("ftp://datris.example.com", "scheme"),
        ("https://datris.example.com/api/v1", "ends in /api/v1"),
        ("https://datris.example.com/api/v1/", "ends in /api/v1"),
        ("http://datris.example.com:80a", "port that is not a number"),
    ],
)
def test_bad_host_says_what_to_fix(host, message):
    with pytest.raises(DatrisConfigError, match=message):
        _settings(host=host)


def test_trailing_slash_is_dropped_and_api_prefix_added():
    settings = _settings(host="https://datris.example.com/")
    assert settings.api_url == "https://datris.example.com/api/v1"


# -- the Port field ----------------------------------------------------------------------------------


def test_port_field_goes_into_the_base_url():
    settings = _settings(host="http://127.0.0.1", port=8080)
    assert settings.api_url == "http://127.0.0.1:8080/api/v1"
    assert _settings(host="http://[::1]", port=8080).base_url == "http://[::1]:8080"
    assert _settings(host="https://datris.example.com/datris", port=8443).base_url == (
        "https://datris.example.com:8443/datris"
    )


@pytest.mark.parametrize("empty", [None, 0])
def test_an_empty_port_field_leaves_the_host_as_it_is(empty):
    # Airflow's UI sends 0 for an empty Port field.
    assert _settings(host="http://127.0.0.1:8080", port=empty).base_url == "http://127.0.0.1:8080"


def test_port_in_host_and_the_same_port_field_agree():
    assert _settings(host="http://127.0.0.1:8080", port=8080).base_url == "http://127.0.0.1:8080"


def test_port_in_host_and_a_different_port_field_are_refused():
    with pytest.raises(DatrisConfigError, match=r"names port 8080 but the Port field says 9090\. Make them agree"):
        _settings(host="http://127.0.0.1:8080", port=9090)


@pytest.mark.parametrize("port", [-1, 70000, True])
def test_port_out_of_range_is_refused(port):
    with pytest.raises(DatrisConfigError, match="Port must be a number from 1 to 65535"):
        _settings(host="http://127.0.0.1", port=port)


def test_host_without_scheme_keeps_the_port_in_the_suggested_fix():
    # What a URI-form connection ``datris://:key@datris.internal:8080`` arrives as.
    with pytest.raises(DatrisConfigError) as err:
        _settings(host="datris.internal", port=8080, password=SECRET)
    assert "e.g. https://datris.internal:8080." in str(err.value)
    assert SECRET not in str(err.value)


def test_endpoint_always_names_the_port():
    assert _settings(host="http://127.0.0.1").endpoint == "http://127.0.0.1:80"
    assert _settings(host="https://datris.example.com").endpoint == "https://datris.example.com:443"
    assert _settings(host="http://127.0.0.1", port=8080).endpoint == "http://127.0.0.1:8080"


# -- credentials in a URL ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "cleaned"),
    [
        (f"https://bob:{SECRET}@datris.example.com", "https://datris.example.com"),
        (f"https://{SECRET}@datris.example.com:8443", "https://datris.example.com:8443"),
        (f"bob:{SECRET}@datris.example.com", "datris.example.com"),
        (f"https://bob:{SECRET}/x#y@datris.example.com", "https://datris.example.com"),
    ],
)
def test_credentials_in_the_host_are_refused_without_showing_them(host, cleaned):
    with pytest.raises(DatrisConfigError) as err:
        _settings(host=host)
    message = str(err.value)
    assert "belongs in the connection's Password field" in message
    assert f"Set Host to '{cleaned}'" in message
    assert SECRET not in message and "bob" not in message


def test_credentials_in_the_ui_url_are_refused_without_showing_them():
    with pytest.raises(DatrisConfigError) as err:
        _settings(ui_url=f"https://bob:{SECRET}@app.example.com")
    assert "extra 'ui_url' has a user name or password in it" in str(err.value)
    assert SECRET not in str(err.value)


# -- the Extra -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"verify": "/no/such/bundle.pem"}, "CA bundle that does not exist"),
        ({"ca_bundle": "/no/such/bundle.pem"}, "extra 'ca_bundle' names a CA bundle that does not exist"),
        ({"ca_bundle": 3}, "'ca_bundle' must be the path of a CA bundle"),
        ({"verify": 3}, "verify"),
        ({"timeout": 0}, "must be positive"),
        ({"timeout": "soon"}, "number of seconds"),
        ({"retries": -1}, "retries"),
        ({"retry_delay": 0}, "retry_delay"),
    ],
)
def test_bad_extra_says_what_to_fix(extra, message):
    with pytest.raises(DatrisConfigError, match=message):
        _settings(**extra)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[1, 2]", "Extra must be a JSON object, not a JSON array"),
        ('"verify"', "Extra must be a JSON object, not a JSON string"),
        ("30", "Extra must be a JSON object, not a JSON number"),
        ('{"verify": tru}', "Extra is not valid JSON"),
    ],
)
def test_extra_that_is_not_a_json_object_says_what_to_write(raw, message):
    with pytest.raises(DatrisConfigError, match=message) as err:
        settings_from_connection_fields(
            conn_id="datris_default", host="https://d.example.com", password=None, extra=raw
        )
    assert '{"verify": true, "timeout": 30}' in str(err.value)


def test_extra_as_json_text_is_read():
    settings = settings_from_connection_fields(
        conn_id="datris_default", host="https://d.example.com", password=None, extra='{"timeout": 12}'
    )
    assert settings.timeout == 12


def test_verify_is_a_boolean_and_the_ca_bundle_a_path_of_its_own(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert _settings(verify="false").verify is False
    assert _settings(verify=True, ca_bundle=str(bundle)).verify == str(bundle)
    assert _settings(ca_bundle="").verify is True
    # Earlier versions documented the bundle's path in 'verify'; it keeps working.
    assert _settings(verify=str(bundle)).verify == str(bundle)


def test_verify_off_and_a_ca_bundle_contradict_each_other(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(DatrisConfigError, match="Turn 'verify' on to check the server with the bundle"):
        _settings(verify=False, ca_bundle=str(bundle))


def test_without_an_id_messages_say_this_connection():
    with pytest.raises(DatrisConfigError, match=r"^This connection has no Host"):
        _settings(host=None, conn_id=None)


def test_warnings_for_no_tls_check_and_a_key_over_plain_http():
    assert any("TLS verification is off" in w for w in _settings(verify=False).warnings())
    remote = _settings(host="http://datris.example.com", password="k")
    assert any("plain http" in w for w in remote.warnings())
    assert _settings(host="http://127.0.0.1:8080", password="k").warnings() == []


def test_key_is_not_in_the_repr():
    assert "s3cr3t" not in repr(_settings(password="s3cr3t"))
