"""Triggerer load: what one watched Datris run costs in Airflow's triggerer, against a sync worker slot.

N ``DatrisPipelineTrigger`` instances (default N = 1, 100, 1000) run in ONE asyncio event loop, as in
the triggerer, each following its own publisher token whose pipeline job never ends. Once every run
has polled at least once (and one more poll interval has passed), a fixed window (default 20 s)
measures, in the process holding the triggers:

* resident memory per watched run: (RSS with the N runs going - RSS before they started) / N;
* CPU per poll: process CPU time (user + system) in the window / status polls completed in it;
* polls per second sustained (expected: N / poll interval).

It also reports what starting the N runs cost (CPU and wall time until every run had polled once).

Variants (``--variant``, comma-separated):

* ``as-shipped``: the triggers exactly as shipped. ``run()`` looks the connection up through
  ``DatrisHook.aget_settings`` (``AIRFLOW_CONN_DATRIS_DEFAULT`` is set: the async lookup works outside a
  triggerer) and each trigger opens its own ``httpx.AsyncClient``.
* ``cached-tls``: the same triggers, with ``datris_provider.client.async_api._tls`` patched to hand out
  one cached ``ssl.SSLContext`` per ``verify`` setting (the proposed fix; see benchmarks/README.md).
* ``shared-client``: the core of ``DatrisPipelineTrigger.run()`` (``PipelineFollower.follow`` driven by
  ``drive_async``, same code path minus the connection lookup) with ONE ``AsyncDatrisClient`` for all.

Polls are counted by a thin wrapper on ``AsyncDatrisClient.get_pipeline_status`` and cross-checked
against the stand-in's request log. The stand-in Datris (a threaded werkzeug server) runs in its own
process, so the measured process holds only the triggers; each (variant, N) is measured in a fresh
process so RSS is not blurred by an earlier round. The poll interval (default 5 s) keeps the stand-in
far from its limit: 1000 runs make 200 polls/s.

Beside it, the sync mode's price: the RSS of one Python process that imports the Task SDK task runner,
i.e. what one sync task holds in a worker slot while it waits.

Usage::

    .venv/bin/python benchmarks/triggerer_load.py [--counts 1,100,1000] [--duration 20]
        [--poll-interval 5] [--variant as-shipped,cached-tls,shared-client] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TAP = "bench_endless_tap"
CONN_ID = "datris_default"
VARIANTS = ("as-shipped", "cached-tls", "shared-client")
TARGET_RSS_KB = 100.0
TARGET_CPU_MS = 2.0
STARTUP_LIMIT_S = 300.0
IDLE_PROBE_S = 2.0
HERE = Path(__file__).resolve()


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------------
# The stand-in Datris, in its own process
# --------------------------------------------------------------------------------------------------


def serve() -> int:
    """Run a stand-in with one never-ending tap; answer commands on stdin, one per line:
    ``runs N`` (start N runs, print their publisher tokens as JSON), ``polls`` (print the number of
    status polls received so far), ``quit``."""
    import logging

    import httpx

    from datris_provider.testing.server import StandInDatris, StandInTap

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log: it costs the server CPU
    datris = StandInDatris(debounce_seconds=0).start()
    datris.add_tap(StandInTap(name=TAP, target_pipeline="bench", records=3, job_seconds=None))
    print(json.dumps({"url": datris.url}), flush=True)
    try:
        with httpx.Client(base_url=datris.api_url, timeout=30) as http:
            for line in sys.stdin:
                command, _, argument = line.strip().partition(" ")
                if command == "runs":
                    tokens = []
                    for _ in range(int(argument)):
                        answer = http.post("/tap/run", json={"name": TAP, "mode": "run"})
                        answer.raise_for_status()
                        tokens.append(answer.json()["publisherToken"])
                    print(json.dumps(tokens), flush=True)
                elif command == "polls":
                    print(len(datris.calls("GET /pipeline/status")), flush=True)
                elif command == "quit":
                    break
    finally:
        datris.stop()
    return 0


class StandInProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.url = json.loads(self._read())["url"]

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the stand-in Datris process ended")
        return line

    def ask(self, command: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self._read())

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --------------------------------------------------------------------------------------------------
# One measurement (in a fresh process)
# --------------------------------------------------------------------------------------------------


def trigger_listener(trigger: Any) -> Any:
    """The listener ``DatrisPipelineTrigger.run()`` gives its follower (its module has moved over time)."""
    try:
        from datris_provider.core.listeners import LogListener
    except ImportError:
        from datris_provider.triggers.datris import TriggerLogListener  # type: ignore[attr-defined]

        return TriggerLogListener(trigger)
    return LogListener(trigger.log)


def cache_tls_contexts() -> None:
    """The proposed fix, applied from outside: build the SSL context once per ``verify`` setting and
    process, instead of letting every ``httpx.AsyncClient`` load the CA bundle again."""
    import ssl

    import httpx

    from datris_provider.client import async_api

    @functools.lru_cache(maxsize=8)
    def shared_tls(verify: bool | str) -> ssl.SSLContext:
        if isinstance(verify, str):
            return ssl.create_default_context(cafile=verify)
        return httpx.create_ssl_context(verify=verify)

    async_api._tls = shared_tls  # type: ignore[assignment]


async def _measure(tokens: list[str], poll_interval: float, duration: float, variant: str) -> dict[str, Any]:
    from datris_provider.client.async_api import AsyncDatrisClient
    from datris_provider.core.log_stream import EventCursor
    from datris_provider.core.pipeline import PipelineFollower
    from datris_provider.core.steps import drive_async
    from datris_provider.hooks.datris import DatrisHook
    from datris_provider.triggers.datris import DatrisPipelineTrigger

    if variant == "cached-tls":
        cache_tls_contexts()

    polls = 0
    polled: set[str] = set()
    original = AsyncDatrisClient.get_pipeline_status

    async def counted(self: Any, token: str, **kwargs: Any) -> Any:
        nonlocal polls
        answer = await original(self, token, **kwargs)
        polls += 1
        polled.add(token)
        return answer

    AsyncDatrisClient.get_pipeline_status = counted  # type: ignore[method-assign]

    # Warm up outside the baseline: lazy imports, the connection lookup, one client, one real poll.
    warm = AsyncDatrisClient(await DatrisHook.aget_settings(CONN_ID))
    await warm.get_pipeline_status(tokens[0])
    await warm.aclose()
    polls, polled = 0, set()

    def make_trigger(token: str) -> DatrisPipelineTrigger:
        return DatrisPipelineTrigger(
            datris_conn_id=CONN_ID,
            publisher_token=token,
            expected_tokens=[],
            poll_interval=poll_interval,
            no_job_timeout=3600,
            max_poll_failures=5,
            deadline_at=None,
            what="bench",
        )

    shared: AsyncDatrisClient | None = None
    if variant == "shared-client":
        shared = AsyncDatrisClient(await DatrisHook.aget_settings(CONN_ID))

    events: list[Any] = []
    errors: list[str] = []

    async def watch(index: int, token: str) -> None:
        # Spread the starts over one interval, as runs deferred at different times would be.
        await asyncio.sleep(index * poll_interval / len(tokens))
        try:
            if shared is None:
                async for event in make_trigger(token).run():
                    events.append(event.payload)
            else:
                follower = PipelineFollower(
                    trigger_listener(make_trigger(token)),
                    poll_interval=poll_interval,
                    no_job_timeout=3600,
                    max_poll_failures=5,
                    clock=time.time,
                    cursor=EventCursor([]),
                )
                steps = follower.follow(token, [], deadline_at=None, what="bench")
                events.append(await drive_async(steps, shared))
        except asyncio.CancelledError:
            raise
        except Exception as err:
            errors.append(repr(err))

    gc.collect()
    idle_cpu = cpu_seconds()
    await asyncio.sleep(IDLE_PROBE_S)
    idle_cpu_ms_per_s = 1000 * (cpu_seconds() - idle_cpu) / IDLE_PROBE_S
    rss_before = rss_kb()

    # Start: every run polled once, then one more interval so all are in their steady rhythm.
    start_cpu, start_wall = cpu_seconds(), time.monotonic()
    tasks = [asyncio.create_task(watch(index, token)) for index, token in enumerate(tokens)]
    while len(polled) < len(tokens) and not errors and time.monotonic() - start_wall < STARTUP_LIMIT_S:
        await asyncio.sleep(0.1)
    startup_s, startup_cpu_s = time.monotonic() - start_wall, cpu_seconds() - start_cpu
    await asyncio.sleep(poll_interval)

    cpu_start, polls_start, wall_start = cpu_seconds(), polls, time.monotonic()
    await asyncio.sleep(duration)
    cpu_end, polls_end, wall_end = cpu_seconds(), polls, time.monotonic()
    gc.collect()
    rss_running = rss_kb()
    total_polls = polls

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if shared is not None:
        await shared.aclose()

    window_polls = polls_end - polls_start
    window = wall_end - wall_start
    return {
        "n": len(tokens),
        "variant": variant,
        "poll_interval": poll_interval,
        "idle_cpu_ms_per_s": idle_cpu_ms_per_s,
        "startup_s": startup_s,
        "startup_cpu_ms_per_run": 1000 * startup_cpu_s / len(tokens),
        "started": len(polled),
        "window_s": window,
        "window_polls": window_polls,
        "polls_per_s": window_polls / window,
        "expected_polls_per_s": len(tokens) / poll_interval,
        "cpu_s": cpu_end - cpu_start,
        "cpu_ms_per_poll": 1000 * (cpu_end - cpu_start) / window_polls if window_polls else float("nan"),
        "cpu_share": (cpu_end - cpu_start) / window,
        "rss_before_kb": rss_before,
        "rss_running_kb": rss_running,
        "rss_per_run_kb": (rss_running - rss_before) / len(tokens),
        "total_client_polls": total_polls,
        "events": len(events),
        "errors": errors[:5],
        "error_count": len(errors),
    }


def measure_main(arguments: argparse.Namespace) -> int:
    tokens = json.loads(Path(arguments.tokens_file).read_text())
    result = asyncio.run(_measure(tokens, arguments.poll_interval, arguments.duration, arguments.variant))
    print(json.dumps(result), flush=True)
    return 0


def sync_task_rss(env: dict[str, str]) -> int:
    """RSS (KiB) of a process that imported the Task SDK task runner: one waiting sync task."""
    code = (
        "import airflow.sdk.execution_time.task_runner, gc; gc.collect(); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0].split()[1])"
    )
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(output.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


def verdict(value: float, target: float) -> str:
    if value <= target:
        return "yes"
    return f"no ({value / target:.1f}x)"


def render(results: list[dict[str, Any]], sync_kb: int, arguments: argparse.Namespace) -> str:
    lines = [
        "# Triggerer load: watched Datris runs in one event loop vs sync worker slots",
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} "
        f"{platform.release()}. Command: `.venv/bin/python benchmarks/triggerer_load.py "
        f"--counts {arguments.counts} --duration {arguments.duration:g} --poll-interval {arguments.poll_interval:g} "
        f"--variant {arguments.variant}`.",
        "",
        f"Each watched run is one `DatrisPipelineTrigger` (or its follow loop) in one asyncio loop, polling every "
        f"{arguments.poll_interval:g} s (so the stand-in, in its own process, is never the bottleneck) a publisher "
        f"token whose job never ends. Window: {arguments.duration:g} s, after every run had polled once and one more "
        f"interval. Target at N = 1000: < {TARGET_RSS_KB:g} KB and < {TARGET_CPU_MS:g} ms CPU per poll per watched "
        "run.",
        "",
        "| variant | N | polls/s (expected) | CPU per poll | CPU (one core) | RSS growth | RSS per run "
        "| start: CPU per run / wall | < 100 KB | < 2 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        growth_mb = (r["rss_running_kb"] - r["rss_before_kb"]) / 1024
        lines.append(
            f"| {r['variant']} | {r['n']} | {r['polls_per_s']:.1f} ({r['expected_polls_per_s']:.1f}) "
            f"| {r['cpu_ms_per_poll']:.2f} ms | {100 * r['cpu_share']:.1f} % | {growth_mb:.1f} MB "
            f"| {r['rss_per_run_kb']:.0f} KB | {r['startup_cpu_ms_per_run']:.1f} ms / {r['startup_s']:.1f} s "
            f"| {verdict(r['rss_per_run_kb'], TARGET_RSS_KB)} | {verdict(r['cpu_ms_per_poll'], TARGET_CPU_MS)} |"
        )
    idle = sorted(r["idle_cpu_ms_per_s"] for r in results)
    lines += [
        "",
        f"Idle process (Airflow imported, no run): {idle[len(idle) // 2]:.2f} ms CPU per second (median); "
        "it is included in CPU per poll, which is why N = 1 looks dearer per poll.",
        "",
        f"Sync mode: a process that imports the Task SDK task runner holds **{sync_kb / 1024:.0f} MB** resident: the "
        "price of one sync task waiting in a worker slot (before its own work, and not counting its supervisor "
        "process).",
        "",
    ]
    for r in results:
        if r["n"] >= 100 and r["rss_per_run_kb"] > 0:
            lines.append(
                f"- {r['variant']}, N = {r['n']}: one waiting sync task costs the memory of "
                f"{sync_kb / r['rss_per_run_kb']:.0f} deferred runs."
            )
        if r["error_count"] or r["events"] or r["started"] < r["n"]:
            lines.append(
                f"- {r['variant']}, N = {r['n']}: {r['started']}/{r['n']} started, {r['error_count']} errors, "
                f"{r['events']} events: {r['errors']}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "serve", "measure"])
    parser.add_argument("--counts", default="1,100,1000", help="watched runs per round (default 1,100,1000)")
    parser.add_argument("--duration", type=float, default=20.0, help="measurement window in seconds (default 20)")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls (default 5)")
    parser.add_argument(
        "--variant", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)} (default: all)"
    )
    parser.add_argument("--output", default=str(HERE.parent / "results-triggerer.md"), help="markdown report path")
    parser.add_argument("--tokens-file", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)

    if arguments.command == "serve":
        return serve()
    if arguments.command == "measure":
        return measure_main(arguments)
    variants = arguments.variant.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")

    with tempfile.TemporaryDirectory(prefix="datris-bench-") as scratch:
        # Airflow gets a throw-away home; nothing of the caller's Airflow configuration leaks in.
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(Path(scratch) / "airflow"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{Path(scratch) / 'airflow.db'}",
            }
        )
        server = StandInProcess(env)
        env["AIRFLOW_CONN_DATRIS_DEFAULT"] = json.dumps({"conn_type": "datris", "host": server.url})
        results = []
        try:
            for variant in variants:
                for n in (int(text) for text in arguments.counts.split(",")):
                    tokens_file = Path(scratch) / f"tokens-{variant}-{n}.json"
                    tokens_file.write_text(json.dumps(server.ask(f"runs {n}")))
                    served_before = server.ask("polls")
                    command = [sys.executable, str(HERE), "measure", "--tokens-file", str(tokens_file)]
                    command += ["--duration", str(arguments.duration), "--poll-interval", str(arguments.poll_interval)]
                    command += ["--variant", variant]
                    output = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                    if output.returncode != 0:
                        sys.stderr.write(output.stderr[-5000:])
                        raise SystemExit(f"measurement {variant} N={n} failed")
                    result = json.loads(output.stdout.strip().splitlines()[-1])
                    result["server_polls"] = server.ask("polls") - served_before
                    results.append(result)
                    print(
                        f"{variant} N={n}: {result['polls_per_s']:.1f} polls/s, "
                        f"{result['cpu_ms_per_poll']:.2f} ms CPU/poll, {result['rss_per_run_kb']:.0f} KB/run, "
                        f"start {result['startup_cpu_ms_per_run']:.1f} ms CPU/run in {result['startup_s']:.1f} s "
                        f"(polls counted {result['total_client_polls']} + 1 warm-up; the stand-in saw "
                        f"{result['server_polls']})",
                        flush=True,
                    )
            sync_kb = sync_task_rss(env)
        finally:
            server.stop()
    report = render(results, sync_kb, arguments)
    print("\n" + report)
    Path(arguments.output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
