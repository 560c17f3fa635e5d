#!/usr/bin/env bash
# A tap run through Airflow (dag.test) against the built-in stand-in Datris: logs, then XComs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python examples/run_demo.py
