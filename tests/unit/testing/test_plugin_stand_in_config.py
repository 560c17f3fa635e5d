"""The ini option ``datris_stand_in_config`` fills the ``datris_stand_in`` fixture from a TOML file."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import requests


def run(stand_in, tap):
    return requests.post(f"{stand_in.api_url}/tap/run", json={"name": tap, "mode": "run"}, timeout=30).json()


def test_the_declared_tap_runs(datris_stand_in):
    assert run(datris_stand_in, "my_orders")["recordCount"] == 42


def test_each_test_gets_the_declared_set_up_again(datris_stand_in):
    datris_stand_in.tap("my_orders").records = 1
    datris_stand_in.add_tap(name="only_here")
    assert run(datris_stand_in, "my_orders")["recordCount"] == 1


def test_and_not_what_an_earlier_test_added(datris_stand_in):
    assert [tap for tap in ("my_orders", "only_here") if "error" not in run(datris_stand_in, tap)] == ["my_orders"]
    assert datris_stand_in.tap("my_orders").records == 42
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makeini("[pytest]\ndatris_stand_in_config = stand-in.toml\n")
    return pytester


def test_the_fixture_serves_the_declared_taps_in_every_test(user_project: pytest.Pytester) -> None:
    (user_project.path / "stand-in.toml").write_text('[[tap]]\nname = "my_orders"\nrecords = 42\n')
    user_project.makepyfile(test_user=USER_TESTS)

    result = user_project.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3)


def test_a_bad_file_stops_the_session_naming_the_file_and_the_fix(user_project: pytest.Pytester) -> None:
    config = user_project.path / "stand-in.toml"
    config.write_text('[[tap]]\nname = "my_orders"\nrecords = "many"\n')
    user_project.makepyfile(test_user="def test_never_runs(datris_stand_in):\n    pass\n")

    result = user_project.runpytest_subprocess("-p", "no:cacheprovider")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"ERROR: datris_stand_in_config: {config}: [[tap]] 1 ('my_orders'): 'records' must be an integer, "
        "not a string ('many')"
    ) in result.errlines
