#!/usr/bin/env python
"""What a DAG file pays, at parse time, for importing the Datris provider.

Airflow parses DAG files all day long, so the import a DAG file makes must stay cheap. Every DAG
file already has ``import airflow.sdk`` and ``from airflow.sdk import BaseOperator`` loaded; this
measures what the provider's import adds on top of that, in a fresh interpreter each time (the
import is cached after the first time, so only a new process shows its real cost):

- ``from datris_provider.operators import DatrisRunTapOperator`` and
  ``from datris_provider.decorators import datris_tap_task``, from this checkout (the interpreter
  running this script, normally ``.venv/bin/python``);
- the same operator import from the published ``airflow-provider-datris`` 0.1.3, installed with the
  same Airflow version into a virtualenv of its own, kept outside the repository (created on the
  first run, about 30 s; reused afterwards).

For each import it reports the median wall time over ``--runs`` fresh interpreters, the modules
the import adds to ``sys.modules``, and whether an HTTP library is among them. It prints a
Markdown table and writes it to ``benchmarks/results-import-cost.md``.

    .venv/bin/python benchmarks/import_cost.py                  # 15 runs per import
    .venv/bin/python benchmarks/import_cost.py --explain        # plus a -X importtime breakdown
    .venv/bin/python benchmarks/import_cost.py --skip-published  # this checkout only

Target (issue: DAG-parse cost): under 10 ms and under 20 modules added.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "benchmarks" / "results-import-cost.md"
PUBLISHED_VERSION = "0.1.3"
TARGET_MS = 10.0
TARGET_MODULES = 20
HTTP_LIBRARIES = ("requests", "httpx", "aiohttp", "urllib3", "httpcore")

OPERATOR_IMPORT = "from datris_provider.operators import DatrisRunTapOperator"
DECORATOR_IMPORT = "from datris_provider.decorators import datris_tap_task"

# Runs in a fresh interpreter: argv[1] is the import statement, argv[2] the name it binds.
PROBE = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk
from airflow.sdk import BaseOperator  # what every DAG file has already
t1 = time.perf_counter()
before = set(sys.modules)
namespace = {}
t2 = time.perf_counter()
exec(compile(sys.argv[1], "<dag file>", "exec"), namespace)
t3 = time.perf_counter()
added = sorted(set(sys.modules) - before)
obj = namespace[sys.argv[2]]
print(json.dumps({
    "import_ms": (t3 - t2) * 1000,
    "sdk_ms": (t1 - t0) * 1000,
    "sdk_modules": len(before),
    "added": added,
    "preloaded_http": sorted(m for m in before if m.split(".")[0] in json.loads(sys.argv[3])),
    "defined_in": f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', sys.argv[2])}",
}))
"""


@dataclass
class Case:
    """One import measured in one interpreter."""

    package: str
    statement: str
    name: str
    python: Path
    samples_ms: list[float] = field(default_factory=list)
    sdk_ms: list[float] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    module_counts: set[int] = field(default_factory=set)
    preloaded_http: list[str] = field(default_factory=list)
    defined_in: str = ""
    sdk_modules: int = 0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def http_added(self) -> list[str]:
        return sorted({m.split(".")[0] for m in self.added if m.split(".")[0] in HTTP_LIBRARIES})

    @property
    def meets_target(self) -> bool:
        return self.median_ms < TARGET_MS and len(self.added) < TARGET_MODULES


def child_env(airflow_home: Path) -> dict[str, str]:
    """The environment of a probe: no outside Airflow configuration, a throw-away Airflow home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env["AIRFLOW_HOME"] = str(airflow_home)
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return env


def probe(case: Case, env: dict[str, str], cwd: Path) -> dict:
    # -I: no current directory on sys.path, so this checkout never shadows the installed package.
    proc = subprocess.run(
        [str(case.python), "-I", "-c", PROBE, case.statement, case.name, json.dumps(HTTP_LIBRARIES)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{case.python} could not run {case.statement!r}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(case: Case, runs: int, env: dict[str, str], cwd: Path) -> None:
    probe(case, env, cwd)  # warm-up: byte-compiles, writes the Airflow home's files
    for _ in range(runs):
        result = probe(case, env, cwd)
        case.samples_ms.append(result["import_ms"])
        case.sdk_ms.append(result["sdk_ms"])
        case.module_counts.add(len(result["added"]))
        case.added = result["added"]
        case.preloaded_http = result["preloaded_http"]
        case.defined_in = result["defined_in"]
        case.sdk_modules = result["sdk_modules"]


def python_version_of(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def distribution_version(python: Path, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    out = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def ensure_published_venv(venv: Path, airflow_version: str, python: str) -> Path:
    """A virtualenv with Airflow and the published provider (created once, then reused)."""
    venv_python = venv / "bin" / "python"
    stamp = venv / ".datris-bench-installed"
    wanted = f"apache-airflow=={airflow_version} airflow-provider-datris=={PUBLISHED_VERSION}"
    if venv_python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return venv_python
    print(f"Creating {venv} with {wanted} (about 30 s, once)...", file=sys.stderr)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    proc = subprocess.run(
        [*pip, f"apache-airflow=={airflow_version}", f"airflow-provider-datris=={PUBLISHED_VERSION}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"Could not install {wanted} into {venv}:\n{proc.stdout}\n{proc.stderr}")
    stamp.write_text(wanted)
    return venv_python


def describe_modules(modules: list[str], limit: int = 20) -> str:
    """The modules in full when they are few, else counted per top-level package."""
    if not modules:
        return "none"
    if len(modules) <= limit:
        return ", ".join(f"`{m}`" for m in modules)
    per_package: dict[str, int] = {}
    for module in modules:
        top = module.split(".")[0]
        per_package[top] = per_package.get(top, 0) + 1
    ranked = sorted(per_package.items(), key=lambda item: (-item[1], item[0]))
    return f"{len(modules)} modules: " + ", ".join(f"`{name}` ({count})" for name, count in ranked)


def render(cases: list[Case], runs: int, airflow_version: str, python_version: str) -> str:
    def fmt(value: float) -> str:
        return f"{value:.1f}"

    lines = [
        "# Import cost of the Datris provider at DAG-parse time",
        "",
        f"Measured by `benchmarks/import_cost.py`: {runs} fresh interpreters per import (median shown), "
        f"Airflow {airflow_version}, Python {python_version}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}. Each import runs on top of `import airflow.sdk` and "
        "`from airflow.sdk import BaseOperator`, which every DAG file has already loaded. "
        f"Target: under {TARGET_MS:.0f} ms and under {TARGET_MODULES} modules added.",
        "",
        "| Package | DAG-file import | Median ms | Min-max ms | Modules added | HTTP libraries added | Target |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for case in cases:
        count = "/".join(str(n) for n in sorted(case.module_counts))
        lines.append(
            f"| {case.package} | `{case.statement}` | {fmt(case.median_ms)} | "
            f"{fmt(min(case.samples_ms))}-{fmt(max(case.samples_ms))} | {count} | "
            f"{', '.join(case.http_added) or 'none'} | {'met' if case.meets_target else 'missed'} |"
        )
    if not any(case.package.startswith("published") for case in cases):
        lines.append("")
        lines.append("(The published package was not measured in this run: `--skip-published`.)")
    else:
        lines.append(
            f"| published {PUBLISHED_VERSION} | `{DECORATOR_IMPORT}` | — | — | — | — | "
            f"no decorator in {PUBLISHED_VERSION} |"
        )
    lines.append("")
    lines.append("Context:")
    lines.append("")
    seen: set[str] = set()
    for case in cases:
        if case.package in seen:
            continue
        seen.add(case.package)
        preloaded = ", ".join(sorted({m.split(".")[0] for m in case.preloaded_http})) or "none"
        lines.append(
            f"- {case.package}: `import airflow.sdk` + `BaseOperator` itself takes "
            f"{fmt(statistics.median(case.sdk_ms))} ms "
            f"and loads {case.sdk_modules} modules; HTTP libraries it has loaded already: {preloaded}."
        )
    for case in cases:
        lines.append(f"- {case.package}, `{case.name}` is `{case.defined_in}`.")
    lines.append("")
    lines.append("Modules each import adds:")
    lines.append("")
    for case in cases:
        lines.append(f"- {case.package}, `{case.statement}`: {describe_modules(case.added)}")
    lines.append("")
    return "\n".join(lines)


def explain(case: Case, env: dict[str, str], cwd: Path) -> str:
    """``-X importtime`` for the import alone: the tree of modules it loads, with their times in µs."""
    marker = "--- datris import starts here ---"
    code = (
        "import sys\nimport airflow.sdk\nfrom airflow.sdk import BaseOperator\n"
        f"sys.stderr.write({marker!r} + '\\n')\nsys.stderr.flush()\n{case.statement}\n"
    )
    proc = subprocess.run(
        [str(case.python), "-I", "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=True,
    )
    lines = proc.stderr.splitlines()
    start = lines.index(marker)
    rows = [line[len("import time:") :] for line in lines[start + 1 :] if line.startswith("import time:")]
    out = [f"-X importtime for `{case.statement}` ({case.package}): self µs | cumulative µs | module"]
    out += [f"  {row}" for row in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per import (default 15)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the Markdown table")
    parser.add_argument(
        "--published-venv",
        type=Path,
        default=Path(os.environ.get("DATRIS_BENCH_VENVS", Path(tempfile.gettempdir()) / "datris-bench-venvs")),
        help="folder for the published package's virtualenv (default $DATRIS_BENCH_VENVS or /tmp/datris-bench-venvs)",
    )
    parser.add_argument(
        "--skip-published", action="store_true", help=f"do not measure the published {PUBLISHED_VERSION}"
    )
    parser.add_argument("--explain", action="store_true", help="also print a -X importtime breakdown of each import")
    parser.add_argument("--check", action="store_true", help="exit 1 when this checkout misses the target")
    args = parser.parse_args(argv)

    airflow_version = metadata.version("apache-airflow")
    ours = Path(sys.executable)
    cases = [
        Case("this checkout", OPERATOR_IMPORT, "DatrisRunTapOperator", ours),
        Case("this checkout", DECORATOR_IMPORT, "datris_tap_task", ours),
    ]
    if not args.skip_published:
        venv = args.published_venv / f"airflow-provider-datris-{PUBLISHED_VERSION}-airflow-{airflow_version}"
        base_python = getattr(sys, "_base_executable", sys.executable)
        published_python = ensure_published_venv(venv, airflow_version, base_python)
        installed = distribution_version(published_python, "airflow-provider-datris")
        if installed != PUBLISHED_VERSION:
            raise SystemExit(f"{venv} holds airflow-provider-datris {installed}, not {PUBLISHED_VERSION}")
        cases.append(Case(f"published {PUBLISHED_VERSION}", OPERATOR_IMPORT, "DatrisRunTapOperator", published_python))

    with tempfile.TemporaryDirectory(prefix="datris-bench-") as tmp:
        work = Path(tmp)
        for index, case in enumerate(cases):
            home = work / f"airflow-home-{index}"
            home.mkdir()
            print(f"Measuring {case.package}: {case.statement} ({args.runs} runs)...", file=sys.stderr)
            measure(case, args.runs, child_env(home), work)
        report = render(cases, args.runs, airflow_version, python_version_of(ours))
        print(report)
        args.output.write_text(report)
        print(f"Written to {args.output}", file=sys.stderr)
        if args.explain:
            home = work / "airflow-home-explain"
            home.mkdir(exist_ok=True)
            for case in cases:
                print(explain(case, child_env(home), work))
    missed = [c for c in cases if c.package == "this checkout" and not c.meets_target]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
