"""The pytest plugin leaves a project's Airflow home alone unless the project opts in.

Each case is a user's own project, run in a fresh pytest process with the provider installed.
"""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

# What this suite's own opt-in put in the environment; a user's project starts without it.
_ISOLATION_VARIABLES = (
    "AIRFLOW_HOME",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__UNIT_TEST_MODE",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    "PYTEST_ADDOPTS",
)

USER_TEST = """
import os


def test_reports_its_airflow_home():
    print("AIRFLOW_HOME=" + os.environ.get("AIRFLOW_HOME", "<unset>"))
    print("SQL_ALCHEMY_CONN=" + os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "<unset>"))
"""

NOTE = "datris: AIRFLOW_HOME is set"


@pytest.fixture
def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in _ISOLATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_user=USER_TEST)
    return pytester


def _seen(result: pytest.RunResult) -> dict[str, str]:
    # -s output: the first print shares its line with the test file's name.
    return dict(re.findall(r"\b(AIRFLOW_HOME|SQL_ALCHEMY_CONN)=(\S+)", result.stdout.str()))


def _ini(pytester: pytest.Pytester, isolated: bool | None) -> None:
    lines = ["[pytest]"]
    if isolated is not None:
        lines.append(f"datris_isolated_airflow = {str(isolated).lower()}")
    pytester.makeini("\n".join(lines) + "\n")


def test_without_the_opt_in_the_users_airflow_home_is_kept(user_project, monkeypatch, tmp_path):
    own_home = tmp_path / "my-airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(own_home))
    _ini(user_project, isolated=None)

    result = user_project.runpytest_subprocess("-s", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    assert _seen(result) == {
        "AIRFLOW_HOME": str(own_home),
        "SQL_ALCHEMY_CONN": "<unset>",
    }
    assert NOTE not in result.stdout.str()


def test_with_the_opt_in_and_no_airflow_home_the_session_gets_an_isolated_one(user_project):
    _ini(user_project, isolated=True)

    result = user_project.runpytest_subprocess("-s", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    seen = _seen(result)
    assert "datris-airflow-home-" in seen["AIRFLOW_HOME"]
    assert seen["SQL_ALCHEMY_CONN"] == f"sqlite:///{seen['AIRFLOW_HOME']}/airflow.db"
    assert NOTE not in result.stdout.str()


@pytest.mark.parametrize("verbosity", [[], ["-q"]], ids=["header", "quiet"])
def test_with_the_opt_in_a_users_airflow_home_still_wins_and_is_named_once(
    user_project, monkeypatch, tmp_path, verbosity
):
    own_home = tmp_path / "my-airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(own_home))
    _ini(user_project, isolated=True)

    result = user_project.runpytest_subprocess("-s", "-p", "no:cacheprovider", *verbosity)

    result.assert_outcomes(passed=1)
    assert _seen(result)["AIRFLOW_HOME"] == str(own_home)
    assert _seen(result)["SQL_ALCHEMY_CONN"] == "<unset>"
    notes = [line for line in result.outlines if NOTE in line]
    assert notes == [
        f"datris: AIRFLOW_HOME is set ({own_home}); DAG runs use that Airflow home, not an isolated one "
        "(datris_isolated_airflow = true). Unset AIRFLOW_HOME for a throw-away home."
    ]
