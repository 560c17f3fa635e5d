"""Stand-in set-ups declared in a TOML file, and the errors a mistyped file gets."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest
import requests

from datris_provider.testing.config import ConfigError, load_config

if TYPE_CHECKING:
    from pathlib import Path

    from datris_provider.testing import StandInDatris

KEY = "cfg-test-key-0123456789"

FULL = f"""
[server]
error_style = "stacktrace"

[[tap]]
name = "my_orders"
records = 42
target_pipeline = "orders"
description = "Orders from the shop"

[[tap]]
name = "orphan_tap"
target_pipeline = false

[[pipeline]]
name = "invoices"
outcome = "warning"
records = 9

[[api_key]]
value = "{KEY}"
label = "airflow"
capabilities = ["tap:read", "tap:run", "job:read", "job:kill"]

[[fault]]
route = "GET /version"
kind = "fail"
status = 503
times = 2
"""


def write(tmp_path: Path, text: str, name: str = "stand-in.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


@pytest.fixture
def served(tmp_path: Path):
    config = load_config(write(tmp_path, FULL))
    with config.new_stand_in() as stand_in:
        config.apply(stand_in)
        yield stand_in


def test_a_declared_tap_runs_with_its_settings_behind_the_declared_key(served: StandInDatris) -> None:
    body = {"name": "my_orders", "mode": "run"}

    refused = requests.post(f"{served.api_url}/tap/run", json=body, timeout=10)
    run = requests.post(f"{served.api_url}/tap/run", json=body, headers={"x-api-key": KEY}, timeout=10)

    assert refused.status_code == 500  # keys are on, and this server writes stack traces
    assert refused.text.startswith("ai.datris.model.DatrisException: x-api-key does not exist or is invalid")
    assert run.status_code == 200
    assert (run.json()["status"], run.json()["recordCount"], run.json()["description"]) == (
        "success",
        42,
        "Orders from the shop",
    )


def test_false_turns_an_optional_setting_off_and_pipelines_keep_their_settings(served: StandInDatris) -> None:
    assert served.tap("orphan_tap").target_pipeline is None
    invoices = served.pipeline("invoices")
    assert (invoices.outcome, invoices.records) == ("warning", 9)


def test_declared_faults_answer_first(served: StandInDatris) -> None:
    statuses = [requests.get(f"{served.api_url}/version", timeout=10).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]


def test_keys_stay_off_unless_the_file_declares_one(tmp_path: Path) -> None:
    quiet = load_config(write(tmp_path, '[[tap]]\nname = "t"\n'))
    keys_off = f'[server]\nrequire_api_keys = false\n[[api_key]]\nvalue = "{KEY}"\nlabel = "a"\n'
    explicit = load_config(write(tmp_path, keys_off))

    assert quiet.require_api_keys is False
    assert explicit.require_api_keys is False
    assert KEY not in repr(explicit)


def test_serve_taps_are_added_beside_the_declared_ones(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[[tap]]\nname = "my_orders"\nrecords = 5\n'), extra_taps=["my_orders", "x"])

    assert config.tap_names == ["my_orders", "x"]
    assert config.taps[0]["records"] == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[tap]]\nname = "t"\nrecrods = 4\n',
            "[[tap]] 1 ('t'): unknown key 'recrods'; did you mean 'records'? Known tap fields: name, ",
        ),
        ('[[tap]]\nname = "t"\nrecords = "42"\n', "[[tap]] 1 ('t'): 'records' must be an integer, not a string ('42')"),
        ('[[tap]]\nname = "t"\nscript_seconds = "slow"\n', "[[tap]] 1 ('t'): 'script_seconds' must be a number"),
        ("[[tap]]\nrecords = 4\n", "[[tap]] 1: missing 'name'"),
        (
            '[[tap]]\nname = "t"\npipeline_outcome = "exploded"\n',
            "[[tap]] 1 ('t'): pipeline_outcome must be one of",
        ),
        ('[[tap]]\nname = "t"\ntarget_pipeline = 3\n', "'target_pipeline' must be a string (or false for none), not"),
        ('[[tap]]\nname = "t"\n[[tap]]\nname = "t"\n', "two [[tap]] entries are named 't'; give each its own name"),
        ('[tap]\nname = "t"\n', "write [[tap]] (one block per entry), not [tap]"),
        ('[[taps]]\nname = "t"\n', "the top level: unknown key 'taps'; did you mean 'tap'?"),
        ('[server]\nerror_stlye = "json"\n', "[server]: unknown key 'error_stlye'; did you mean 'error_style'?"),
        ('[server]\nerror_style = "yaml"\n', "[server]: error_style must be one of"),
        ("[server]\nport = 8080\n", "[server]: unknown key 'port'"),
        ('[[api_key]]\nvalue = 12345678\nlabel = "a"\n', "[[api_key]] 1: 'value' must be a string, not an integer"),
        (
            '[[api_key]]\nvalue = "k"\nlabel = "a"\ncapabilities = ["tap:fly:sideways=1"]\n',
            "[[api_key]] 1 (label 'a'): ",
        ),
        ('[[fault]]\nroute = "GET /version"\nkind = "explode"\n', "[[fault]] 1: kind must be one of fail, delay"),
        ('[[fault]]\nroute = "GET /version"\nkind = "delay"\n', "[[fault]] 1 (delay): missing 'seconds'"),
        ('[[fault]]\nroute = "version"\nkind = "reset"\n', "[[fault]] 1 (reset): route must look like 'POST /tap/run'"),
        ('[[fault]]\nkind = "html"\nroute = "GET /version"\ncolour = "red"\n', "unknown key 'colour'"),
        ("[[tap]\n", "not valid TOML: "),
    ],
)
def test_a_bad_file_says_what_to_fix(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_an_api_key_value_never_appears_in_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, f'[[api_key]]\nvalue = ["{KEY}"]\nlabel = "a"\n')

    assert "'value' must be a string" in message
    assert KEY not in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such stand-in configuration file"):
        load_config(tmp_path / "nope.toml")


def test_other_client_runs_are_declared_for_every_set_up(tmp_path: Path) -> None:
    text = '[[tap]]\nname = "my_orders"\n\n[[other_client_run]]\ntap = "my_orders"\nwhen = "before_next_run"\n'
    config = load_config(write(tmp_path, text))

    with config.new_stand_in() as stand_in:
        config.apply(stand_in)
        answer = requests.post(f"{stand_in.api_url}/tap/run", json={"name": "my_orders", "mode": "run"}, timeout=30)
        stand_in.wait_for(lambda: len(stand_in.journal.script_runs("my_orders")) == 1)
        (run,) = stand_in.journal.script_runs("my_orders")

    assert answer.json()["persistedReason"] == "debounced"
    assert run.client == "other"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[other_client_run]]\nwhen = "now"\n', "[[other_client_run]] 1: missing 'tap'"),
        ('[[tap]]\nname = "t"\n[[other_client_run]]\ntap = "x"\n', "[[other_client_run]] 1: no [[tap]] named 'x'"),
        ('[[tap]]\nname = "t"\n[[other_client_run]]\ntap = "t"\nparams = 3\n', "'params' must be a table"),
        ('[[tap]]\nname = "t"\n[[other_client_run]]\ntap = "t"\nwhen = "later"\n', "when must be one of"),
        ('[server]\nclock = "sundial"\n', "[server]: clock must be one of"),
        ('[server]\ntime_scale = "fast"\n', "[server]: 'time_scale' must be a number, not a string ('fast')"),
        ('[[tap]]\nname = "t"\njob_seconds = -1\n', "job_seconds cannot be negative"),
    ],
)
def test_a_bad_other_client_run_or_clock_says_what_to_fix(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_job_seconds_false_is_a_job_that_never_ends(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[[tap]]\nname = "t"\njob_seconds = false\n'))

    assert config.taps[0]["job_seconds"] is None
