"""``@task.datris_tap``: a TaskFlow function that builds a Datris tap run's parameters.

The decorated function runs when the task runs; the dict it returns becomes the run's
``tap_params``. Everything else (the one-scheduler check, the run, the pipeline wait, the streamed
logs, the XComs, the retry rules) is :class:`~datris_provider.operators.tap.DatrisRunTapOperator`'s.

Importing this module stays cheap at DAG-parse time: only ``airflow.sdk`` is imported here, the
HTTP client loads when a task runs.
"""

from __future__ import annotations

import inspect
import itertools
import reprlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from datris_provider.operators.tap import DatrisRunTapOperator

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from airflow.sdk import Context
    from airflow.sdk.bases.decorator import TaskDecorator

__all__ = ["datris_tap_task"]

_short_repr = reprlib.Repr()
_short_repr.maxstring = 80
_short_repr.maxother = 80


class _DatrisTapDecoratedOperator(DecoratedOperator, DatrisRunTapOperator):
    """Runs a Datris tap with the parameters a TaskFlow function returns.

    The function is called with the Airflow context and its (rendered) arguments, upstream XComArgs
    included. It must return a dict of tap parameters, or ``None`` for none. The dict is rendered
    with Jinja, merged over the ``tap_params`` given to the decorator (the function's keys win), then
    validated and sent exactly as :class:`DatrisRunTapOperator` does. Any other return type fails
    the task for good (``AirflowFailException``): a retry would return the same thing.

    The task's return value is the run result dict; ``multiple_outputs`` is always ``False``
    because the operator already pushes ``publisher_token``, ``pipeline_tokens``, ``row_count`` and
    ``duration_ms`` as their own XComs.

    :param python_callable: the decorated function, returning the run's ``tap_params``.
    :param op_args: positional arguments for the function (templated).
    :param op_kwargs: keyword arguments for the function (templated).
    :param kwargs: every :class:`DatrisRunTapOperator` and ``BaseOperator`` argument
        (``tap_name`` is required).
    """

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *DatrisRunTapOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **DatrisRunTapOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.datris_tap"
    # Re-send the rendered fields after the run, so the UI shows the params the function returned.
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if _is_async_callable(python_callable):
            name = getattr(python_callable, "__name__", repr(python_callable))
            raise TypeError(
                f"@task.datris_tap cannot decorate the async function {name}(): it must be a plain "
                "function returning a dict of tap parameters."
            )
        if kwargs.pop("multiple_outputs", False):
            raise ValueError(_MULTIPLE_OUTPUTS_MESSAGE)
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            multiple_outputs=False,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        _context_merge(context, self.op_kwargs)
        returned = self.python_callable(*self.op_args, **self._function_kwargs(context))
        self.tap_params = self._merged_tap_params(returned, context)
        if self.tap_params:
            self.log.info(
                "%s() gave the tap parameters: %s.", self._function_name, ", ".join(map(str, self.tap_params))
            )
        else:
            self.log.info("%s() gave no tap parameters.", self._function_name)
        # What DecoratedOperator.execute adds (Asset arguments become inlets; the return value, a
        # dict, holds no Asset), then the run. Not through DecoratedOperator.execute: on Airflow 3.0
        # it reads self.xcom_push, which this operator does not have.
        for arg in itertools.chain(self.op_args, self.op_kwargs.values()):
            if _is_asset(arg):
                self.inlets.append(arg)
        return DatrisRunTapOperator.execute(self, context)

    def _function_kwargs(self, context: Context) -> Mapping[str, Any]:
        """The context and op_kwargs entries the function's signature asks for."""
        if hasattr(DecoratedOperator, "determine_kwargs"):  # Airflow 3.2+
            return self.determine_kwargs(context)
        from airflow.utils.operator_helpers import (  # type: ignore[attr-defined]  # Airflow 3.0, 3.1
            determine_kwargs,
        )

        return determine_kwargs(self.python_callable, self.op_args, context)

    @property
    def _function_name(self) -> str:
        return getattr(self.python_callable, "__name__", repr(self.python_callable))

    def _merged_tap_params(self, returned: Any, context: Context) -> dict[str, Any] | None:
        """The decorator's (rendered) ``tap_params`` with the function's rendered dict merged over them."""
        from datris_provider._compat import AirflowFailException

        if returned is not None and not isinstance(returned, Mapping):
            raise AirflowFailException(
                f"{self.task_id}: the @task.datris_tap function {self._function_name}() must return a dict "
                f"of tap parameters, or None for no parameters; it returned a {type(returned).__name__}: "
                f"{_short_repr.repr(returned)}."
            )
        base = self.tap_params
        if base is not None and not isinstance(base, Mapping):
            raise AirflowFailException(
                f"{self.task_id}: the tap_params given to @task.datris_tap must be a dict of parameters to "
                f"merge the function's dict over, not a {type(base).__name__}: {_short_repr.repr(base)}."
            )
        if returned is None:
            return None if base is None else dict(base)
        rendered = self.render_template(dict(returned), context)
        return {**(base or {}), **rendered}


def _is_async_callable(func: Any) -> bool:
    """``async def`` functions, also behind ``functools.partial`` (the Task SDK's own check is 3.2+)."""
    while hasattr(func, "func"):
        func = func.func
    return inspect.iscoroutinefunction(func)


def _context_merge(context: Context, values: Mapping[str, Any]) -> None:
    try:  # Airflow 3.1+
        from airflow.sdk.definitions.context import context_merge
    except ImportError:  # Airflow 3.0
        from airflow.utils.context import context_merge  # type: ignore[attr-defined,no-redef]
    context_merge(context, values)


def _is_asset(value: Any) -> bool:
    from airflow.sdk import Asset

    return isinstance(value, Asset)


_MULTIPLE_OUTPUTS_MESSAGE = (
    "@task.datris_tap always pushes the run result dict as one XCom (multiple_outputs=False); "
    "row_count, duration_ms, publisher_token and pipeline_tokens are pushed as their own XComs already."
)


def datris_tap_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Turn a function into a Datris tap run whose ``tap_params`` are what the function returns.

    Registered as ``@task.datris_tap``; import this factory for a typed equivalent::

        @task.datris_tap(tap_name="orders_api_to_postgres", poll_interval=15)
        def ingest_orders(ds=None, data_interval_end=None):
            return {"since": ds, "until": data_interval_end.strftime("%Y-%m-%d")}

    The function runs when the task runs, with the Airflow context and upstream XComArgs as
    arguments. Its return value, a dict (or ``None`` for no parameters), is rendered with Jinja,
    merged over the decorator's own ``tap_params`` (which act as defaults: the function's keys win,
    shallow merge), then validated and sent like ``DatrisRunTapOperator``'s ``tap_params``. Any
    other return type fails the task without retry, naming the function and what it returned.

    Calling the decorated function gives an XComArg whose value is the run result dict
    (``result["row_count"]`` works downstream). ``multiple_outputs`` is pinned to ``False``, so a
    ``-> dict`` annotation on the function does not unroll the result; the operator pushes
    ``publisher_token``, ``pipeline_tokens``, ``row_count`` and ``duration_ms`` as their own XComs.
    ``.override()``, ``.partial()``, ``.expand()`` and ``.expand_kwargs()`` work as for any TaskFlow
    task; mapped arguments go to the function.

    :param python_callable: the function to decorate (when used as ``@datris_tap_task`` without
        arguments).
    :param kwargs: :class:`~datris_provider.operators.tap.DatrisRunTapOperator` arguments
        (``tap_name`` is required; ``datris_conn_id``, ``wait_for_completion``, ``poll_interval``,
        ``tap_params``, ``timeout``, ``no_job_timeout``, ``max_poll_failures``, ``if_busy``,
        ``busy_timeout``) and ``BaseOperator``
        arguments (``task_id``, ``retries``, ...). ``multiple_outputs=True`` is refused.
    :return: a TaskFlow decorator.
    """
    if kwargs.pop("multiple_outputs", False):
        raise ValueError(_MULTIPLE_OUTPUTS_MESSAGE)
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=False,
        decorated_operator_class=_DatrisTapDecoratedOperator,
        **kwargs,
    )
