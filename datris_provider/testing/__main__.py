"""Run the stand-in Datris server from the command line, with a few demo taps.

Usage::

    python -m datris_provider.testing serve --port 8080 [--host 127.0.0.1] [--api-key KEY]
                                            [--error-style json|stacktrace]

Point an Airflow connection at the printed URL to try DAGs without a real Datris server.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from datris_provider.testing.server import ERROR_STYLES, StandInDatris, StandInTap

if TYPE_CHECKING:
    from collections.abc import Sequence

# Keep the request log of a long-running demo server from growing without bound.
DEMO_REQUEST_LOG_LIMIT = 1000

# Demo runs take a second and their jobs finish after a few status polls, like a small real load.
DEMO_SCRIPT_SECONDS = 1.0
DEMO_POLLS_UNTIL_START = 1
DEMO_POLLS_UNTIL_END = 3


def _demo_tap(name: str, **fields: Any) -> StandInTap:
    return StandInTap(
        name=name,
        script_seconds=DEMO_SCRIPT_SECONDS,
        polls_until_start=DEMO_POLLS_UNTIL_START,
        polls_until_end=DEMO_POLLS_UNTIL_END,
        **fields,
    )


def demo_taps() -> list[StandInTap]:
    """The taps the demo server starts with: one of each interesting behaviour."""
    return [
        _demo_tap(
            name="orders_api_to_postgres",
            description="Orders from the shop API into Postgres (manual runs only)",
            target_pipeline="orders",
            records=1532,
        ),
        _demo_tap(
            name="customers_pg_to_snowflake",
            description="Customers from Postgres into Snowflake (manual runs only)",
            target_pipeline="customers",
            loader="SnowflakeLoader",
            records=250,
        ),
        _demo_tap(
            name="nightly_cron_tap",
            description="Scheduled by Datris itself every day at 06:00",
            target_pipeline="daily_metrics",
            cron="0 0 6 * * ?",
            records=48,
        ),
        _demo_tap(
            name="broken_tap",
            description="Its script fails: the run answers HTTP 200 with status failure",
            target_pipeline="orders",
            error="RuntimeError: upstream API answered 503 Service Unavailable",
        ),
        _demo_tap(
            name="bad_load_tap",
            description="The script works but the pipeline load fails",
            target_pipeline="payments",
            pipeline_outcome="error",
            records=12,
        ),
        _demo_tap(
            name="contracts_documents_tap",
            description="A document tap: one pipeline job per new document",
            target_pipeline="contracts",
            tap_type="document",
            loader="PGVectorLoader",
            records=3,
            documents=2,
        ),
    ]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (``serve`` is the only command)."""
    parser = argparse.ArgumentParser(
        prog="python -m datris_provider.testing",
        description="Stand-in Datris server for local testing of Datris clients and Airflow DAGs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the stand-in Datris API with demo taps until Ctrl-C")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 = any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--api-key",
        default=None,
        help="require this x-api-key (full access); without it, API keys are off like a default Datris install",
    )
    serve.add_argument(
        "--error-style",
        choices=ERROR_STYLES,
        default="json",
        help='error bodies of newer servers ({"error": ...}) or of older ones (Java stack traces)',
    )
    return parser


def connection_example(url: str, api_key: str | None) -> str:
    """An ``AIRFLOW_CONN_DATRIS_DEFAULT`` value pointing at the stand-in."""
    connection: dict[str, str] = {"conn_type": "datris", "host": url}
    if api_key is not None:
        connection["password"] = api_key
    return json.dumps(connection)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Stop cleanly on Ctrl-C and on SIGTERM, even when started in the background: a shell can start
    background jobs with SIGINT ignored, and container runtimes stop processes with SIGTERM."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def serve(host: str, port: int, api_key: str | None, error_style: str) -> None:
    """Start the stand-in with the demo taps and block until interrupted."""
    datris = StandInDatris(host=host, port=port, error_style=error_style, request_log_limit=DEMO_REQUEST_LOG_LIMIT)
    taps = [datris.add_tap(tap) for tap in demo_taps()]
    if api_key is not None:
        datris.require_api_keys(True)
        datris.add_api_key(api_key, label="cli", capabilities=("*:*",))

    _stop_on_signals()
    datris.start()
    try:
        print(f"Stand-in Datris listening on {datris.url} (API under {datris.api_url})")
        print("Demo taps: " + ", ".join(tap.name for tap in taps))
        print("Airflow connection:")
        print(f"  export AIRFLOW_CONN_DATRIS_DEFAULT='{connection_example(datris.url, api_key)}'")
        print("Press Ctrl-C to stop.")
        sys.stdout.flush()
        forever = threading.Event()
        # Wait in slices so Ctrl-C is delivered promptly on every platform.
        while not forever.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("\nStopping.")
    finally:
        datris.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m datris_provider.testing``."""
    arguments = build_parser().parse_args(argv)
    if arguments.command == "serve":
        serve(arguments.host, arguments.port, arguments.api_key, arguments.error_style)
    return 0


if __name__ == "__main__":
    sys.exit(main())
