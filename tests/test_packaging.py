"""The built artefacts: the sdist and the wheel build, pass ``twine check``, and an Airflow that has
only the wheel installed (no checkout, no editable install) lists the provider, its connection type,
its task decorator and its extra links.

Slow (two virtualenvs, an Airflow install: about a minute with a warm pip cache) and needs the
package index, so it runs only under its marker::

    .venv/bin/python -m pytest -m packaging tests/test_packaging.py

Set ``DATRIS_KEEP_PACKAGING_VENVS=1`` to keep the virtualenvs (their path is printed) for a look.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from datris_provider.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[1]
DIST_NAME = "airflow-provider-datris"
LINKS = ("datris_provider.links.DatrisTapRunLink", "datris_provider.links.DatrisPipelineJobLink")
HOOK_CLASS = "datris_provider.hooks.datris.DatrisHook"
DECORATOR_CLASS = "datris_provider.decorators.datris_tap.datris_tap_task"
INSTALL_TIMEOUT = 900
# pip prints one of these per package when a configured local index folder is missing; it is noise.
PIP_NOISE = "is ignored: it is neither a file nor a directory"


def run(cmd: Sequence[str | Path], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 300):
    """Run a command; on failure, fail the test with its output (minus pip's noise)."""
    proc = subprocess.run(
        [str(part) for part in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        output = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if PIP_NOISE not in line)
        pytest.fail(f"`{' '.join(map(str, cmd))}` exited with {proc.returncode}:\n{output[-6000:]}")
    return proc


def clean_env(airflow_home: Path) -> dict[str, str]:
    """The caller's environment without its Airflow and Python settings (the test session's isolated
    Airflow home included), pointed at a throw-away Airflow home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        }
    )
    return env


def new_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", path])
    return path / "bin" / "python"


@dataclass
class Built:
    wheel: Path
    sdist: Path | None
    twine: Path | None
    airflow_python: Path
    airflow: Path
    env: dict[str, str]
    airflow_version: str

    def cli(self, *args: str) -> list[dict[str, Any]]:
        """``airflow <args> -o json``, parsed (anything printed before the JSON is skipped)."""
        proc = run([self.airflow, *args, "-o", "json"], env=self.env, timeout=300)
        out = proc.stdout
        start = out.find("[")
        assert start >= 0, f"no JSON in the output of airflow {' '.join(args)}:\n{out}\n{proc.stderr}"
        return json.loads(out[start:])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("packaging")
    dist = root / "dist"
    airflow_version = metadata.version("apache-airflow")
    keep = os.environ.get("DATRIS_KEEP_PACKAGING_VENVS") == "1"

    # Tools: build (sdist, then the wheel from the sdist, which proves the sdist is complete) and twine.
    tools_python = new_venv(root / "tools-venv")
    tools = subprocess.run(
        [tools_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "build", "twine"],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if tools.returncode == 0:
        run([tools_python, "-m", "build", "--outdir", dist, REPO], timeout=INSTALL_TIMEOUT)
        twine: Path | None = tools_python.parent / "twine"
    else:  # no build/twine to be had: build the wheel alone with pip
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, REPO], timeout=INSTALL_TIMEOUT)
        twine = None
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1, f"expected one wheel in {dist}, found {wheels}"

    # A clean virtualenv: the wheel and the same Airflow as the development one, nothing else.
    airflow_python = new_venv(root / "airflow-venv")
    run(
        [
            airflow_python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            wheels[0],
            f"apache-airflow=={airflow_version}",
        ],
        timeout=INSTALL_TIMEOUT,
    )
    home = root / "airflow-home"
    home.mkdir()
    yield Built(
        wheel=wheels[0],
        sdist=sdists[0] if sdists else None,
        twine=twine,
        airflow_python=airflow_python,
        airflow=airflow_python.parent / "airflow",
        env=clean_env(home),
        airflow_version=airflow_version,
    )
    if keep:
        print(f"Kept the packaging virtualenvs under {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


def test_sdist_and_wheel_pass_twine_check(built: Built) -> None:
    if built.twine is None or built.sdist is None:
        pytest.skip("build and twine could not be installed; only the wheel was built")
    proc = run([built.twine, "check", "--strict", built.sdist, built.wheel])
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_wheel_holds_the_package_and_its_entry_points(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = wheel.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
        wheel_metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert built.wheel.name.startswith(f"airflow_provider_datris-{__version__}-")
    tops = {name.split("/")[0] for name in names}
    assert tops == {"datris_provider", dist_info}, f"unexpected top-level entries: {sorted(tops)}"
    for module in (
        "datris_provider/__init__.py",
        "datris_provider/operators/tap.py",
        "datris_provider/decorators/datris_tap.py",
        "datris_provider/links.py",
        "datris_provider/hooks/datris.py",
        "datris_provider/triggers/datris.py",
        "datris_provider/testing/plugin.py",
    ):
        assert module in names, f"{module} is missing from the wheel"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = datris_provider:get_provider_info" in entry_points
    assert "datris = datris_provider.testing.plugin" in entry_points
    assert f"Version: {__version__}" in wheel_metadata
    assert "Requires-Dist: apache-airflow>=3.0" in wheel_metadata


def test_sdist_holds_the_sources_and_no_local_clutter(built: Built) -> None:
    if built.sdist is None:
        pytest.skip("build could not be installed; no sdist was built")
    with tarfile.open(built.sdist) as sdist:
        names = [member.name.split("/", 1)[1] for member in sdist.getmembers() if "/" in member.name]
    for expected in ("pyproject.toml", "README.md", "datris_provider/__init__.py", "tests/conftest.py"):
        assert expected in names, f"{expected} is missing from the sdist"
    clutter = sorted(
        {
            name.split("/")[0]
            for name in names
            if name.startswith((".venv", ".airflow-home", ".mypy_cache", ".ruff_cache", ".pytest_cache", "dist/"))
            or "__pycache__" in name
        }
    )
    assert not clutter, f"the sdist carries local files: {clutter} (ignore them in .gitignore)"
    assert built.sdist.stat().st_size < 2_000_000, f"the sdist is {built.sdist.stat().st_size} bytes"


def test_providers_list_shows_the_provider_and_its_version(built: Built) -> None:
    providers = {row["package_name"]: row for row in built.cli("providers", "list")}
    assert DIST_NAME in providers, sorted(providers)
    assert providers[DIST_NAME]["version"] == __version__


def test_providers_get_shows_connection_type_decorator_and_links(built: Built) -> None:
    (info,) = built.cli("providers", "get", DIST_NAME, "--full")
    assert info["package-name"] == DIST_NAME
    assert info["versions"][0] == __version__
    connection_types = {c["connection-type"]: c for c in info["connection-types"]}
    assert connection_types["datris"]["hook-class-name"] == HOOK_CLASS
    assert {"name": "datris_tap", "class-name": DECORATOR_CLASS} in info["task-decorators"]
    assert set(LINKS) <= set(info["extra-links"])


def test_hooks_register_the_datris_connection_type(built: Built) -> None:
    hooks = {row["connection_type"]: row for row in built.cli("providers", "hooks")}
    assert hooks["datris"]["class"] == HOOK_CLASS, hooks.get("datris")
    assert hooks["datris"]["package_name"] == DIST_NAME
    assert hooks["datris"]["conn_id_attribute_name"] == "datris_conn_id"


def test_connection_form_has_its_behaviour_and_fields(built: Built) -> None:
    behaviours = {row["field_behaviours"] for row in built.cli("providers", "behaviours")}
    assert "datris" in behaviours
    widgets = {row["connection_parameter_name"] for row in built.cli("providers", "widgets")}
    assert {"extra__datris__verify", "extra__datris__timeout", "extra__datris__ui_url"} <= widgets, widgets


def test_extra_links_are_registered(built: Built) -> None:
    links = {row["extra_link_class_name"] for row in built.cli("providers", "links")}
    assert set(LINKS) <= links, links


def test_triggers_are_registered(built: Built) -> None:
    triggers = {row["class"] for row in built.cli("providers", "triggers") if row["package_name"] == DIST_NAME}
    assert "datris_provider.triggers.datris" in triggers, triggers


def test_installed_wheel_parses_a_dag_with_the_decorator_and_the_operator(built: Built, tmp_path: Path) -> None:
    """The Task SDK finds ``@task.datris_tap`` through the entry point, and a DAG using it and the
    operator parses, from the wheel alone."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "packaged_dag.py").write_text(
        textwrap.dedent(
            """
            from airflow.sdk import DAG, task

            from datris_provider.operators import DatrisRunTapOperator

            with DAG(dag_id="packaged_dag", schedule=None):
                @task.datris_tap(tap_name="orders_api_to_postgres")
                def window(ds=None):
                    return {"since": ds}

                window() >> DatrisRunTapOperator(task_id="classic", tap_name="customers_pg_to_snowflake")
            """
        )
    )
    probe = textwrap.dedent(
        f"""
        import json, sys
        import datris_provider
        from airflow.sdk import task
        from datris_provider.decorators import datris_tap_task
        try:
            from airflow.dag_processing.dagbag import DagBag
        except ImportError:  # Airflow < 3.1
            from airflow.models.dagbag import DagBag
        bag = DagBag(dag_folder={str(dags)!r})
        dag = bag.dags.get("packaged_dag")
        print(json.dumps({{
            "package_file": datris_provider.__file__,
            "decorator_is_registered": task.datris_tap is datris_tap_task,
            "import_errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
            "tasks": {{t.task_id: type(t).__name__ for t in dag.tasks}} if dag else None,
            "operator_names": {{t.task_id: t.operator_name for t in dag.tasks}} if dag else None,
        }}))
        """
    )
    proc = run([built.airflow_python, "-I", "-c", probe], env=built.env, cwd=tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "site-packages" in result["package_file"], f"not the installed wheel: {result['package_file']}"
    assert result["decorator_is_registered"] is True
    assert result["import_errors"] == {}
    assert result["tasks"] == {"window": "_DatrisTapDecoratedOperator", "classic": "DatrisRunTapOperator"}
    assert result["operator_names"]["window"] == "@task.datris_tap"
