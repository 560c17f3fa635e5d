"""The README's user test file passes in a project of its own, as a DAG author would run it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.dag

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "user_tests"

# What this suite's own opt-in put in the environment; a user's project starts without it.
_SUITE_VARIABLES = (
    "AIRFLOW_HOME",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__UNIT_TEST_MODE",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
    "AIRFLOW_CONN_DATRIS_DEFAULT",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    "PYTEST_ADDOPTS",
)


def test_the_user_test_example_passes_in_its_own_project(pytester: pytest.Pytester, monkeypatch) -> None:
    for name in _SUITE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3)
