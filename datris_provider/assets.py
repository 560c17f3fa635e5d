"""Airflow Assets for Datris: ``datris://<instance>/pipelines/<pipeline>`` and ``…/taps/<tap>/runs``.

A tap task declares the pipeline it feeds as an outlet; a downstream DAG scheduled on that asset runs
when the tap's data has landed. The task emits the asset event only when the pipeline succeeded (or
warned): a failed run fails the task, and a run that loaded nothing drops its Datris outlets.

A tap that Datris schedules itself has no Airflow task: its runs asset is updated by a watcher
(:class:`~datris_provider.triggers.watcher.DatrisTapRunsTrigger`) each time a run's data lands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from airflow.sdk import Asset

SCHEME = "datris"
# Outcomes after which the pipeline's data has landed.
LANDED_STATUSES = frozenset({"success", "warning"})


def pipeline_asset_uri(pipeline: str, *, instance: str = "default") -> str:
    """The asset URI of a Datris pipeline; ``instance`` tells several Datris installs apart."""
    if not pipeline or not instance:
        raise ValueError("A Datris pipeline asset needs a pipeline name and an instance name.")
    return f"{SCHEME}://{quote(instance, safe='')}/pipelines/{quote(pipeline, safe='')}"


def datris_pipeline_asset(pipeline: str, *, instance: str = "default", **asset_kwargs: Any) -> Asset:
    """An Airflow Asset for a Datris pipeline, to use in ``outlets=[...]`` and ``schedule=[...]``.

    :param pipeline: the Datris pipeline (a tap's target pipeline, or an upload's pipeline).
    :param instance: a name for the Datris install, when a deployment talks to several.
    :param asset_kwargs: passed to ``Asset`` (e.g. ``extra``, ``group``).
    """
    from airflow.sdk import Asset

    asset_kwargs.setdefault("name", f"datris_{instance}_{pipeline}")
    return Asset(uri=pipeline_asset_uri(pipeline, instance=instance), **asset_kwargs)


def tap_runs_asset_uri(tap_name: str, *, instance: str = "default") -> str:
    """The asset URI of a tap's runs, which a run watcher updates once per landed run."""
    if not tap_name or not instance:
        raise ValueError("A Datris tap-runs asset needs a tap name and an instance name.")
    return f"{SCHEME}://{quote(instance, safe='')}/taps/{quote(tap_name, safe='')}/runs"


def datris_tap_runs_asset(
    tap_name: str, *, instance: str = "default", watcher_name: str | None = None, **trigger_kwargs: Any
) -> Asset:
    """An Asset updated once per run of a Datris-scheduled tap whose data landed; schedule DAGs on it.

    :param tap_name: the Datris tap to watch.
    :param instance: a name for the Datris install, when a deployment talks to several.
    :param watcher_name: the AssetWatcher's name (default ``datris_<tap>_runs``).
    :param trigger_kwargs: passed to :class:`~datris_provider.triggers.watcher.DatrisTapRunsTrigger`
        (``datris_conn_id``, ``poll_interval``, ``fire_on``, ``catch_up_runs``, ``lookback_seconds``).
    """
    from airflow.sdk import Asset, AssetWatcher

    from datris_provider.triggers.watcher import DatrisTapRunsTrigger

    trigger = DatrisTapRunsTrigger(tap_name=tap_name, **trigger_kwargs)
    return Asset(
        uri=tap_runs_asset_uri(tap_name, instance=instance),
        name=f"datris_{instance}_{tap_name}_runs",
        watchers=[AssetWatcher(name=watcher_name or f"datris_{tap_name}_runs", trigger=trigger)],
    )


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Check a ``datris://`` URI (registered with Airflow through the provider manifest)."""
    parts = [part for part in uri.path.split("/") if part]
    pipeline = len(parts) == 2 and parts[0] == "pipelines"
    tap_runs = len(parts) == 3 and parts[0] == "taps" and parts[2] == "runs"
    if not uri.netloc or not (pipeline or tap_runs):
        raise ValueError(
            "A datris asset URI must look like datris://<instance>/pipelines/<pipeline> "
            "or datris://<instance>/taps/<tap>/runs."
        )
    return uri


def pipeline_of(uri: str) -> str | None:
    """The pipeline a ``datris://`` asset URI names, or ``None`` for any other URI."""
    parts = urlsplit(uri)
    segments = [segment for segment in parts.path.split("/") if segment]
    if parts.scheme != SCHEME or len(segments) != 2 or segments[0] != "pipelines":
        return None
    return unquote(segments[1])


def keep_outlets(outlets: list[Any], status: str, landed_pipelines: set[str]) -> tuple[list[Any], list[str]]:
    """The outlets to emit after a run, and notes on the Datris ones dropped.

    Datris pipeline assets are kept only when the run's data landed, and only for pipelines the run
    actually fed; every other outlet is left to Airflow.
    """
    kept, notes = [], []
    for outlet in outlets:
        pipeline = pipeline_of(getattr(outlet, "uri", "") or "")
        if pipeline is None:
            kept.append(outlet)
        elif status not in LANDED_STATUSES:
            notes.append(f"No asset event for {outlet.uri}: the run ended '{status}', so no data landed.")
        elif landed_pipelines and pipeline not in landed_pipelines:
            notes.append(f"No asset event for {outlet.uri}: this run fed {sorted(landed_pipelines)}, not '{pipeline}'.")
        else:
            kept.append(outlet)
    return kept, notes
