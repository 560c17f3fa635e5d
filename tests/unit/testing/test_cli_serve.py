"""``python -m datris_provider.testing serve`` with a DAG author's own taps."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import requests

from datris_provider.testing.__main__ import main

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KEY = "cli-serve-key-0123456789"


class Served:
    def __init__(self, process: subprocess.Popen[str], banner: list[str]) -> None:
        self.process = process
        self.banner = banner
        line = banner[0]
        self.url = line.split(" listening on ", 1)[1].split(" ", 1)[0]

    def run(self, tap: str, **headers: str) -> requests.Response:
        body = {"name": tap, "mode": "run"}
        return requests.post(f"{self.url}/api/v1/tap/run", json=body, headers=headers, timeout=30)


@pytest.fixture
def serve() -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def start(*arguments: str) -> Served:
        process = subprocess.Popen(
            [sys.executable, "-m", "datris_provider.testing", "serve", "--port", "0", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        banner: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:  # ends when the process exits, so a failed start cannot hang here
            banner.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                return Served(process, banner)
        raise AssertionError(f"serve exited with {process.wait()}: {process.stderr.read() if process.stderr else ''}")

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_serve_tap_answers_a_run_of_that_tap_with_a_success(serve) -> None:
    served = serve("--tap", "my_orders", "--tap", "my_customers")

    answer = served.run("my_orders")

    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["persisted"]) == ("success", True)
    assert "Taps: my_orders, my_customers" in served.banner
    assert served.run("orders_api_to_postgres").status_code == 500  # no demo taps unless asked
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0


def test_serve_config_declares_taps_and_keys_without_printing_a_key(serve, tmp_path: Path) -> None:
    config = tmp_path / "stand-in.toml"
    config.write_text(f'[[tap]]\nname = "my_orders"\nrecords = 42\n\n[[api_key]]\nvalue = "{KEY}"\nlabel = "airflow"\n')

    served = serve("--config", str(config), "--tap", "extra_tap")

    assert served.run("my_orders").status_code == 401
    answer = served.run("my_orders", **{"x-api-key": KEY})
    assert (answer.json()["status"], answer.json()["recordCount"]) == ("success", 42)
    assert served.run("extra_tap", **{"x-api-key": KEY}).json()["status"] == "success"
    assert "Taps: my_orders, extra_tap" in served.banner
    assert "API keys required; keys: airflow" in served.banner
    assert KEY not in "\n".join(served.banner)


def test_serve_with_a_bad_config_file_says_what_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "stand-in.toml"
    config.write_text('[[tap]]\nname = "my_orders"\nrecrods = 42\n')

    assert main(["serve", "--port", "0", "--config", str(config)]) == 2

    error = capsys.readouterr().err
    assert error.startswith(f"error: {config}: [[tap]] 1 ('my_orders'): unknown key 'recrods'; did you mean 'records'?")
