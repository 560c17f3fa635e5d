#!/usr/bin/env bash
# The whole test suite: unit tests, the stand-in's own tests and the DAGs run with dag.test().
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
