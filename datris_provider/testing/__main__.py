"""Run the stand-in Datris server from the command line, and steer one that is running.

Usage::

    python -m datris_provider.testing serve [--port 8080] [--host 127.0.0.1] [--config FILE]
                                            [--tap NAME ...] [--demo-taps] [--api-key KEY]
                                            [--error-style json|stacktrace] [--time-scale S]
                                            [--clock scaled|manual]

    python -m datris_provider.testing admin [--url URL] fault ROUTE KIND [--status N] [--times N]
                                            [--seconds S] [--body TEXT] [--header NAME:VALUE ...]
                                            [--after-seconds S]
    python -m datris_provider.testing admin [--url URL] other-run TAP [--params JSON]
                                            [--when now|on_tap_read|before_next_run|after]
                                            [--after-seconds S]
    python -m datris_provider.testing admin [--url URL] cron-tick TAP
    python -m datris_provider.testing admin [--url URL] advance SECONDS
    python -m datris_provider.testing admin [--url URL] journal [--tap NAME]

``serve`` starts with the demo taps unless ``--config`` or ``--tap`` names the taps to serve
(``--demo-taps`` adds them anyway). ``admin`` talks to the serving stand-in's ``/_stand_in/...``
routes; ``--url`` defaults to ``$DATRIS_STAND_IN_URL``, else ``http://127.0.0.1:8080``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from datris_provider.testing.clock import CLOCK_MODES
from datris_provider.testing.server import ERROR_STYLES, StandInDatris, StandInTap

if TYPE_CHECKING:
    from collections.abc import Sequence

    from datris_provider.testing.config import StandInConfig

# Keep the request log of a long-running demo server from growing without bound.
DEMO_REQUEST_LOG_LIMIT = 1000

# Demo runs take a second and their jobs finish a few seconds after the job scheduler starts them,
# like a small real load.
DEMO_SCRIPT_SECONDS = 1.0
DEMO_JOB_SECONDS = 3.0

DEFAULT_ADMIN_URL = "http://127.0.0.1:8080"
ADMIN_URL_VARIABLE = "DATRIS_STAND_IN_URL"
ADMIN_PREFIX = "/_stand_in"
OTHER_RUN_WHEN = ("now", "on_tap_read", "before_next_run", "after")

# Exit codes: 1 the stand-in refused the command, 2 the command line or the config file is wrong,
# 3 no stand-in answered at the URL.
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def _demo_tap(name: str, **fields: Any) -> StandInTap:
    return StandInTap(name=name, script_seconds=DEMO_SCRIPT_SECONDS, job_seconds=DEMO_JOB_SECONDS, **fields)


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


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface: ``serve`` and ``admin``."""
    parser = argparse.ArgumentParser(
        prog="python -m datris_provider.testing",
        description="Stand-in Datris server for local testing of Datris clients and Airflow DAGs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    _add_admin(commands)
    return parser


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser("serve", help="serve the stand-in Datris API until Ctrl-C")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 = any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file declaring taps, pipelines, API keys, faults and other clients' runs",
    )
    serve.add_argument(
        "--tap",
        metavar="NAME",
        action="append",
        default=[],
        help="serve a manual-only tap of this name with default behaviour (repeatable)",
    )
    serve.add_argument(
        "--demo-taps",
        action="store_true",
        help="also serve the demo taps (the default when neither --config nor --tap is given)",
    )
    serve.add_argument(
        "--api-key",
        default=None,
        help="require this x-api-key (full access); without it, API keys are off like a default Datris install",
    )
    serve.add_argument(
        "--error-style",
        choices=ERROR_STYLES,
        default=None,
        help='error bodies of newer servers ({"error": ...}, the default) or of older ones (Java stack traces)',
    )
    serve.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="stand-in seconds per real second (the stand-in's default speeds time up; 1 = real time)",
    )
    serve.add_argument(
        "--clock",
        choices=CLOCK_MODES,
        default=None,
        help="manual: time moves only through `admin advance SECONDS`",
    )


def _add_admin(commands: Any) -> None:
    admin = commands.add_parser("admin", help="steer a running stand-in: faults, other clients, cron, clock, journal")
    admin.add_argument(
        "--url",
        default=None,
        help=f"the stand-in's URL (default ${ADMIN_URL_VARIABLE}, else {DEFAULT_ADMIN_URL})",
    )
    actions = admin.add_subparsers(dest="action", required=True)

    fault = actions.add_parser("fault", help="make the next calls of a route fail")
    fault.add_argument("route", help='e.g. "POST /tap/run"')
    fault.add_argument("kind", choices=_fault_kinds(), help="the kind of fault")
    fault.add_argument("--status", type=int, help="the HTTP status to answer with (fail, html, garbage)")
    fault.add_argument("--times", type=int, help="how many calls it applies to (default 1)")
    fault.add_argument("--seconds", type=float, help="how long to wait first (delay)")
    fault.add_argument("--body", help="the body to answer with (fail, garbage)")
    fault.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="an extra header (fail; repeatable)"
    )
    fault.add_argument("--after-seconds", type=float, help="when the proxy cuts the call (proxy_timeout)")

    other = actions.add_parser("other-run", help="start a run of a tap as another client would")
    other.add_argument("tap", help="the tap")
    other.add_argument("--params", type=_json_object, help="the run's params as a JSON object, e.g. '{\"day\": 1}'")
    other.add_argument("--when", choices=OTHER_RUN_WHEN, default="now", help="when the run starts (default now)")
    other.add_argument("--after-seconds", type=float, help="stand-in seconds from now (with --when after)")

    cron = actions.add_parser("cron-tick", help="fire one cron run of a tap now")
    cron.add_argument("tap", help="the tap")

    advance = actions.add_parser("advance", help="move the stand-in's clock forward")
    advance.add_argument("seconds", type=float, help="stand-in seconds")

    journal = actions.add_parser("journal", help="print what the stand-in received and did (JSON; key values hidden)")
    journal.add_argument("--tap", help="only what concerns this tap")


def _fault_kinds() -> tuple[str, ...]:
    from datris_provider.testing.config import FAULT_METHODS

    return FAULT_METHODS


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"day\": 1}}', not {text!r}")
    return value


# ---------------------------------------------------------------------------------------------- serve


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


def serve_config(config_file: str | None, taps: Sequence[str]) -> StandInConfig:
    """What ``serve`` declares: the file's set-up, plus one default tap per ``--tap``.

    :raises ConfigError: the file cannot be used.
    """
    from datris_provider.testing.config import StandInConfig, load_config

    if config_file is not None:
        return load_config(config_file, extra_taps=taps)
    config = StandInConfig(source="--tap").with_taps(taps)
    config.check()
    return config


def serve(
    host: str,
    port: int,
    api_key: str | None,
    error_style: str | None,
    *,
    config_file: str | None = None,
    taps: Sequence[str] = (),
    demo: bool = False,
    time_scale: float | None = None,
    clock: str | None = None,
) -> int:
    """Start the stand-in and block until interrupted; returns the exit code."""
    from datris_provider.testing.config import ConfigError

    try:
        config = serve_config(config_file, taps)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    settings: dict[str, Any] = {"host": host, "port": port}
    settings.setdefault("request_log_limit", config.server.get("request_log_limit", DEMO_REQUEST_LOG_LIMIT))
    overrides = {"error_style": error_style, "time_scale": time_scale, "clock": clock}
    settings.update({name: value for name, value in overrides.items() if value is not None})
    try:
        datris = config.new_stand_in(**settings)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    served_demo = demo or (config_file is None and not taps)
    if served_demo:
        for tap in demo_taps():
            datris.add_tap(tap)
    if api_key is not None:
        datris.require_api_keys(True)
        datris.add_api_key(api_key, label="cli", capabilities=("*:*",))

    _stop_on_signals()
    datris.start()
    try:
        config.apply(datris)
    except ConfigError as error:
        datris.stop()
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        _print_banner(datris, config, api_key, served_demo)
        forever = threading.Event()
        # Wait in slices so Ctrl-C is delivered promptly on every platform.
        while not forever.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("\nStopping.")
    finally:
        datris.stop()
    return 0


def _print_banner(datris: StandInDatris, config: StandInConfig, api_key: str | None, demo: bool) -> None:
    print(f"Stand-in Datris listening on {datris.url} (API under {datris.api_url})")
    names = [*config.tap_names, *(tap.name for tap in demo_taps() if demo)]
    print("Taps: " + (", ".join(names) if names else "none"))
    labels = config.api_key_labels + (["cli"] if api_key is not None else [])
    if config.require_api_keys or api_key is not None:
        print("API keys required; keys: " + (", ".join(labels) or "none"))
    clock = datris.clock
    speed = "time moves only through `admin advance`" if clock.manual else f"{clock.time_scale:g} s per real second"
    print(f"Clock: {clock.mode}, {speed}")
    print("Airflow connection:")
    print(f"  export AIRFLOW_CONN_DATRIS_DEFAULT='{connection_example(datris.url, api_key)}'")
    print(f"Steer it: python -m datris_provider.testing admin --url {datris.url} --help")
    print("Press Ctrl-C to stop.")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------- admin


class AdminError(Exception):
    """An admin command that did not work; ``exit_code`` says why."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def admin_request(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call one ``/_stand_in`` route of a serving stand-in and return its JSON answer.

    :raises AdminError: nothing answers at ``url``, or the stand-in refused the command.
    """
    import urllib.error
    import urllib.request

    base = url.rstrip("/").removesuffix("/api/v1")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base}{ADMIN_PREFIX}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("error", detail)
        if error.code == 404:
            detail = f"{base} has no {ADMIN_PREFIX}{path} route; is it a stand-in Datris of this version? ({detail})"
        raise AdminError(f"the stand-in refused: HTTP {error.code}: {detail}", EXIT_REFUSED) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise AdminError(
            f"no stand-in Datris answers at {base} ({reason}); start one with "
            "`python -m datris_provider.testing serve`, or pass --url",
            EXIT_UNREACHABLE,
        ) from None
    try:
        return json.loads(text) if text else {}
    except ValueError:
        raise AdminError(f"{base}{ADMIN_PREFIX}{path} answered something that is not JSON: {text[:200]!r}", 1) from None


def _fault_body(arguments: argparse.Namespace) -> dict[str, Any]:
    from datris_provider.testing.config import fault_arguments

    given = {
        "status": arguments.status,
        "times": arguments.times,
        "seconds": arguments.seconds,
        "body": arguments.body,
        "headers": _headers(arguments.header) if arguments.header else None,
        "after_seconds": arguments.after_seconds,
    }
    given = {name: value for name, value in given.items() if value is not None}
    accepted = fault_arguments(arguments.kind)
    wrong = [name for name in given if name not in accepted]
    if wrong:
        options = ", ".join(_option(name) for name in accepted if name != "route") or "no options"
        raise AdminError(
            f"{arguments.kind} takes {options}; not {', '.join(_option(name) for name in wrong)}", EXIT_USAGE
        )
    missing = [name for name, required in accepted.items() if required and name != "route" and name not in given]
    if missing:
        raise AdminError(f"{arguments.kind} needs {', '.join(_option(name) for name in missing)}", EXIT_USAGE)
    return {"route": arguments.route, "kind": arguments.kind, **given}


def _option(name: str) -> str:
    return "--header" if name == "headers" else "--" + name.replace("_", "-")


def _headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, separator, text = value.partition(":")
        if not separator or not name.strip():
            raise AdminError(f"--header must look like 'Retry-After: 2', not {value!r}", EXIT_USAGE)
        headers[name.strip()] = text.strip()
    return headers


def _other_run_body(arguments: argparse.Namespace) -> dict[str, Any]:
    if (arguments.when == "after") != (arguments.after_seconds is not None):
        raise AdminError("--when after goes with --after-seconds S (and --after-seconds only with it)", EXIT_USAGE)
    body: dict[str, Any] = {"tap": arguments.tap, "when": arguments.when}
    if arguments.params is not None:
        body["params"] = arguments.params
    if arguments.after_seconds is not None:
        body["after_seconds"] = arguments.after_seconds
    return body


def admin(arguments: argparse.Namespace) -> int:
    """Run one ``admin`` action; prints the stand-in's answer and returns the exit code."""
    import urllib.parse

    url = arguments.url or os.environ.get(ADMIN_URL_VARIABLE) or DEFAULT_ADMIN_URL
    try:
        if arguments.action == "fault":
            answer = admin_request(url, "POST", "/fault", _fault_body(arguments))
        elif arguments.action == "other-run":
            answer = admin_request(url, "POST", "/other-run", _other_run_body(arguments))
        elif arguments.action == "cron-tick":
            answer = admin_request(url, "POST", "/cron-tick", {"tap": arguments.tap})
        elif arguments.action == "advance":
            answer = admin_request(url, "POST", "/clock/advance", {"seconds": arguments.seconds})
        else:
            query = "?" + urllib.parse.urlencode({"tap": arguments.tap}) if arguments.tap else ""
            answer = admin_request(url, "GET", "/journal" + query)
    except AdminError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m datris_provider.testing``."""
    arguments = build_parser().parse_args(argv)
    if arguments.command == "serve":
        return serve(
            arguments.host,
            arguments.port,
            arguments.api_key,
            arguments.error_style,
            config_file=arguments.config,
            taps=arguments.tap,
            demo=arguments.demo_taps,
            time_scale=arguments.time_scale,
            clock=arguments.clock,
        )
    return admin(arguments)


if __name__ == "__main__":
    sys.exit(main())
