"""OpenLineage facets for Datris tasks, read from Datris's own lineage API.

Airflow calls ``get_openlineage_facets_on_complete`` only when ``apache-airflow-providers-openlineage``
is installed (the ``openlineage`` extra); without it nothing here is imported. A missing or failing
lineage endpoint never changes the task's result: the task just reports no datasets.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datris_provider.client.models import LineageNode, LineageView
    from datris_provider.hooks.datris import DatrisHook

INPUT_NODE_TYPES = frozenset({"source", "dataset"})
OUTPUT_NODE_TYPES = frozenset({"dataset"})


def dataset_identity(node: LineageNode) -> tuple[str, str]:
    """OpenLineage (namespace, name) for a Datris node: ``postgres:datris.public.orders`` gives
    (``postgres``, ``datris.public.orders``); a name without a system prefix lands in ``datris``."""
    system, sep, rest = node.name.partition(":")
    if sep and rest:
        return system, rest
    return "datris", f"{node.type}.{node.name}"


def lineage_datasets(view: LineageView | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Inputs (what feeds the node) and outputs (what it writes), as (namespace, name) pairs."""
    if view is None:
        return [], []
    inputs = [dataset_identity(node) for node in view.upstream if node.type in INPUT_NODE_TYPES]
    outputs = [dataset_identity(node) for node in view.downstream if node.type in OUTPUT_NODE_TYPES]
    return inputs, outputs


@cache
def _run_facet_class() -> Any:
    import attrs
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attrs.define
    class DatrisRunFacet(RunFacet):
        """What Datris reported about the run (OpenLineage fields are camelCase).

        The ids are Datris's publisher and pipeline tokens; the field names avoid the word "token",
        which Airflow's secret masker would blank out.
        """

        publisher: str | None = None
        pipelineJobs: list[str] = attrs.field(factory=list)
        recordCount: int = 0
        status: str = ""

    return DatrisRunFacet


def operator_lineage(hook: DatrisHook, node_type: str, name: str, result: dict[str, Any] | None, log: Any) -> Any:
    """Build an ``OperatorLineage`` for a finished Datris task; never raises for lineage problems."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    from datris_provider.client.errors import DatrisError

    if not result:
        # Nothing ran (the task failed before or during its run): nothing to describe, nothing to ask.
        return OperatorLineage()
    try:
        view = hook.client.get_lineage(node_type, name)
    except DatrisError as err:
        log.info("Datris lineage for %s '%s' is unavailable: %s", node_type, name, err)
        view = None
    inputs, outputs = lineage_datasets(view)
    run_facets = {
        "datris": _run_facet_class()(
            publisher=result.get("publisher_token"),
            pipelineJobs=list(result.get("pipeline_tokens") or []),
            recordCount=int(result.get("row_count") or 0),
            status=str(result.get("status", "")),
        )
    }
    return OperatorLineage(
        inputs=[Dataset(namespace=ns, name=n) for ns, n in inputs],
        outputs=[Dataset(namespace=ns, name=n) for ns, n in outputs],
        run_facets=run_facets,
    )
