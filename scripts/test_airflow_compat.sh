#!/usr/bin/env bash
# Runs the test suite against an older Airflow (by default the oldest supported, 3.0.x) in a
# virtualenv of its own, beside the development .venv (which has the newest Airflow). .ci/run uses it
# for every supported minor but the newest.
#
#   bash scripts/test_airflow_compat.sh                        # Airflow 3.0.6 in .venv-airflow30
#   bash scripts/test_airflow_compat.sh -k taskflow -x         # extra arguments go to pytest
#   AIRFLOW_VERSION=3.1.8 bash scripts/test_airflow_compat.sh  # in .venv-airflow31
#   AIRFLOW_VERSION=3.2.2 COMPAT_SUITE=dags bash scripts/test_airflow_compat.sh
#   bash scripts/test_airflow_compat.sh --install-only         # build the virtualenv, test nothing
#
# Environment:
#   AIRFLOW_VERSION      the apache-airflow version to test against (default 3.0.6, the last 3.0.x)
#   COMPAT_VENV          the virtualenv to use or create (default .venv-airflow<major><minor>)
#   PYTHON               the interpreter that creates it (default python3.11 when present, else python3)
#   COMPAT_SUITE         "full" (default): every test but the end-to-end and packaging ones;
#                        "dags": every DAG test of the operator, the decorator, deferrable mode and the
#                        sensor (the files in DAG_SUBSET below), run with dag.test() against the stand-in
#   PYTEST_MARKERS       the -m expression (default: "not e2e and not packaging"; "dag" for "dags")
#   AIRFLOW_CONSTRAINTS  an Airflow constraints file or URL to install with, e.g.
#                        https://raw.githubusercontent.com/apache/airflow/constraints-3.0.6/constraints-3.11.txt
#                        (what the GitHub workflow uses). Without it, AIRFLOW_PINS applies instead.
#   AIRFLOW_PINS         extra requirements pinned beside Airflow when no constraints file is given
#                        (default: the pins of the minor, below).
#
# The pins of each minor. Airflow is meant to be installed with the constraints file it published for
# the release; that file cannot be fetched where only the package index is reachable, so the pins
# below stand in for the part of it that matters: each one is a library whose newer releases, which
# the release's own requirements do not exclude, break that Airflow. Each was found by installing the
# release without it and running the suite.
#   3.0.x  fastapi<0.117 cadwyn<5.5   Airflow 3.0 caps neither; with today's FastAPI and Cadwyn its
#                                     in-process execution API answers HTTP 422 to every task start,
#                                     so every dag.test() task fails before it runs.
#                                     (SQLAlchemy stays on 1.4: Airflow 3.0 caps it below 2.0 itself.)
#   3.1.x  none                       Airflow 3.1 caps FastAPI itself (<0.118, so 0.117.x with
#                                     cadwyn 5.4.x); the suite passes with today's svcs (26.x) and
#                                     SQLAlchemy (2.1.x), which it does not cap.
#   3.2.x  fastapi<0.137 cadwyn<8 svcs<26
#                                     Airflow 3.2 asks for fastapi>=0.129, cadwyn>=6.1.1 and svcs>=25.1
#                                     with no cap. With FastAPI 0.137+ and the cadwyn 7.1+ that goes with
#                                     it, its execution API fails to build its models (pydantic:
#                                     "__pydantic_core_schema__"); with svcs 26 it finds no
#                                     "svcs_registry" on the app. Either way every task start fails.
#   3.3.x  none: the development .venv (scripts/setup_env.sh) installs it as it resolves.
#
# The virtualenv is reinstalled only when one of these or pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

# The "dags" subset: the DAG tests of the operator, the decorator, deferrable mode and the sensor.
DAG_SUBSET=(
  tests/test_tap_operator_dags.py
  tests/test_taskflow_dags.py
  tests/test_deferrable_dags.py
  tests/test_sensor_dags.py
)

install_only=
if [ "${1:-}" = "--install-only" ]; then
  install_only=1
  shift
fi

AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.0.6}
minor=$(cut -d. -f1,2 <<<"$AIRFLOW_VERSION")
COMPAT_VENV=${COMPAT_VENV:-.venv-airflow${minor/./}}
COMPAT_SUITE=${COMPAT_SUITE:-full}
AIRFLOW_CONSTRAINTS=${AIRFLOW_CONSTRAINTS:-}
case "$minor" in
  3.0) default_pins="fastapi<0.117 cadwyn<5.5" ;;
  3.2) default_pins="fastapi<0.137 cadwyn<8 svcs<26" ;;
  *) default_pins="" ;;
esac
AIRFLOW_PINS=${AIRFLOW_PINS-$default_pins}
case "$COMPAT_SUITE" in
  full)
    PYTEST_MARKERS=${PYTEST_MARKERS:-not e2e and not packaging}
    selection=()
    ;;
  dags)
    PYTEST_MARKERS=${PYTEST_MARKERS:-dag}
    selection=("${DAG_SUBSET[@]}")
    for path in "${selection[@]}"; do
      if [ ! -e "$path" ]; then
        echo "COMPAT_SUITE=dags names $path, which does not exist: update DAG_SUBSET in $0" >&2
        exit 2
      fi
    done
    ;;
  *)
    echo "COMPAT_SUITE must be full or dags, not $COMPAT_SUITE" >&2
    exit 2
    ;;
esac
if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

# pip warns once per package about local index folders this machine's pip config names; not errors.
quiet_pip() {
  local status=0
  "$COMPAT_VENV/bin/python" -m pip "$@" --quiet --disable-pip-version-check 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || status=${PIPESTATUS[0]}
  return "$status"
}

if [ ! -x "$COMPAT_VENV/bin/python" ]; then
  echo "Creating $COMPAT_VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$COMPAT_VENV"
fi

stamp="$COMPAT_VENV/.datris-compat-installed"
wanted="airflow=$AIRFLOW_VERSION constraints=$AIRFLOW_CONSTRAINTS pins=$AIRFLOW_PINS"
wanted="$wanted pyproject=$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "Installing apache-airflow==$AIRFLOW_VERSION ${AIRFLOW_PINS:+($AIRFLOW_PINS) }and the provider (editable) into $COMPAT_VENV"
  quiet_pip install --upgrade pip
  if [ -n "$AIRFLOW_CONSTRAINTS" ]; then
    extra_args=(--constraint "$AIRFLOW_CONSTRAINTS")
  else
    # shellcheck disable=SC2206  # the pins are words on purpose
    extra_args=($AIRFLOW_PINS)
  fi
  # Airflow pinned on the same command line, so pip cannot move it while resolving the provider;
  # the extras match the development install's ([dev] without the lint tools).
  quiet_pip install "apache-airflow==$AIRFLOW_VERSION" ${extra_args[@]+"${extra_args[@]}"} \
    -e ".[testing,openlineage]"
  echo "$wanted" > "$stamp"
fi

installed=$("$COMPAT_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("apache-airflow"))')
if [ "$installed" != "$AIRFLOW_VERSION" ]; then
  echo "Expected apache-airflow $AIRFLOW_VERSION in $COMPAT_VENV, found $installed" >&2
  exit 1
fi
if [ -n "$install_only" ]; then
  echo "apache-airflow $installed ready in $COMPAT_VENV"
  exit 0
fi
echo "Testing against apache-airflow $installed ($("$COMPAT_VENV/bin/python" --version 2>&1)), suite: $COMPAT_SUITE"

# An Airflow home left in the environment would defeat the plugin's isolated home.
unset AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
exec "$COMPAT_VENV/bin/python" -m pytest -m "$PYTEST_MARKERS" ${selection[@]+"${selection[@]}"} "$@"
