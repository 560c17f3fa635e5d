from __future__ import annotations

import pytest

from datris_provider.client.errors import DatrisConfigError
from datris_provider.client.settings import settings_from_connection_fields


def _settings(host="https://datris.example.com", password=None, **extra):
    return settings_from_connection_fields(conn_id="datris_default", host=host, password=password, extra=extra)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (None, "has no Host"),
        ("  ", "has no Host"),
        ("datris.example.com", "has no http:// or https:// scheme"),
        ("ftp://datris.example.com", "scheme"),
        ("https://datris.example.com/api/v1", "ends in /api/v1"),
        ("https://datris.example.com/api/v1/", "ends in /api/v1"),
    ],
)
def test_bad_host_says_what_to_fix(host, message):
    with pytest.raises(DatrisConfigError, match=message):
        _settings(host=host)


def test_trailing_slash_is_dropped_and_api_prefix_added():
    settings = _settings(host="https://datris.example.com/")
    assert settings.api_url == "https://datris.example.com/api/v1"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"verify": "/no/such/bundle.pem"}, "CA bundle that does not exist"),
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


def test_verify_accepts_booleans_as_text_and_a_bundle_path(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert _settings(verify="false").verify is False
    assert _settings(verify=str(bundle)).verify == str(bundle)


def test_warnings_for_no_tls_check_and_a_key_over_plain_http():
    assert any("TLS verification is off" in w for w in _settings(verify=False).warnings())
    remote = _settings(host="http://datris.example.com", password="k")
    assert any("plain http" in w for w in remote.warnings())
    assert _settings(host="http://127.0.0.1:8080", password="k").warnings() == []


def test_key_is_not_in_the_repr():
    assert "s3cr3t" not in repr(_settings(password="s3cr3t"))
