#!/usr/bin/env bash
# Runs the test suite against an older Airflow (by default the oldest supported, 3.0.x) in a
# virtualenv of its own, beside the development .venv (which has the newest Airflow).
#
#   bash scripts/test_airflow_compat.sh                       # Airflow 3.0.6 in .venv-airflow30
#   bash scripts/test_airflow_compat.sh -k taskflow -x        # extra arguments go to pytest
#   AIRFLOW_VERSION=3.1.8 COMPAT_VENV=.venv-airflow31 bash scripts/test_airflow_compat.sh
#
# Environment:
#   AIRFLOW_VERSION      the apache-airflow version to test against (default 3.0.6, the last 3.0.x)
#   COMPAT_VENV          the virtualenv to use or create (default .venv-airflow30)
#   PYTHON               the interpreter that creates it (default python3.11 when present, else python3)
#   AIRFLOW_CONSTRAINTS  an Airflow constraints file or URL to install with, e.g.
#                        https://raw.githubusercontent.com/apache/airflow/constraints-3.0.6/constraints-3.11.txt
#                        (what CI uses). Without it, AIRFLOW_PINS applies instead.
#   AIRFLOW_PINS         extra requirements pinned beside Airflow when no constraints file is given.
#                        Default for 3.0.x: "fastapi<0.117 cadwyn<5.5". Airflow 3.0 does not cap
#                        them, and with today's FastAPI/Cadwyn its in-process execution API answers
#                        HTTP 422 to every task start, so every dag.test() task fails before it runs.
#                        Default for 3.2.x: "fastapi<0.137 cadwyn<8 svcs<26" (with newer ones the
#                        execution API fails to build its models, or to find its svcs registry).
#   PYTEST_MARKERS       the -m expression (default: everything but e2e and packaging)
#
# The virtualenv is reinstalled only when one of these or pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.0.6}
COMPAT_VENV=${COMPAT_VENV:-.venv-airflow30}
PYTEST_MARKERS=${PYTEST_MARKERS:-not e2e and not packaging}
AIRFLOW_CONSTRAINTS=${AIRFLOW_CONSTRAINTS:-}
case "$AIRFLOW_VERSION" in
  3.0.*) default_pins="fastapi<0.117 cadwyn<5.5" ;;
  3.2.*) default_pins="fastapi<0.137 cadwyn<8 svcs<26" ;;
  *) default_pins="" ;;
esac
AIRFLOW_PINS=${AIRFLOW_PINS-$default_pins}
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
  echo "Installing apache-airflow==$AIRFLOW_VERSION and the provider (editable) into $COMPAT_VENV"
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
echo "Testing against apache-airflow $installed ($("$COMPAT_VENV/bin/python" --version 2>&1))"

# An Airflow home left in the environment would defeat the plugin's isolated home.
unset AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
exec "$COMPAT_VENV/bin/python" -m pytest -m "$PYTEST_MARKERS" "$@"
