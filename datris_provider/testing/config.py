"""Stand-in Datris set-ups declared in a TOML file: taps, pipelines, API keys, faults and other clients' runs.

The same file serves ``python -m datris_provider.testing serve --config FILE`` and the pytest plugin
(ini option ``datris_stand_in_config``)::

    [server]                      # StandInDatris settings (all optional)
    error_style = "stacktrace"
    require_api_keys = true       # default: true when the file declares an [[api_key]]

    [[tap]]                       # StandInTap fields; only `name` is required
    name = "my_orders"
    records = 42
    target_pipeline = "orders"

    [[pipeline]]                  # add_pipeline() arguments
    name = "invoices"
    outcome = "warning"

    [[api_key]]                   # add_api_key() arguments
    value = "test-key"
    label = "airflow"
    capabilities = ["tap:read", "tap:run", "job:read", "job:kill"]

    [[fault]]                     # kind = fail | delay | reset | html | garbage | proxy_timeout,
    route = "GET /pipeline/status"  # then that method's arguments
    kind = "fail"
    status = 503
    times = 2

    [[other_client_run]]          # other_client_run() arguments; `tap` names the tap
    tap = "my_orders"
    when = "before_next_run"

TOML has no null: ``false`` turns off a setting that can be None (``target_pipeline = false`` is a tap
without a pipeline, ``job_seconds = false`` a job that never ends on its own).

The accepted keys are read from the stand-in's own classes and methods, so the file always offers
exactly what the Python API does. Every mistake (unknown key, wrong type, a value the stand-in
rejects) is a :class:`ConfigError` naming the file, the entry and what to write instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from datris_provider.testing.server import FAULT_KINDS, StandInDatris, StandInPipeline, StandInTap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["FAULT_METHODS", "ConfigError", "StandInConfig", "fault_arguments", "load_config", "parse_config"]

SECTIONS = ("server", "tap", "pipeline", "api_key", "fault", "other_client_run")

# A [[fault]] entry's `kind`: each fault kind is the StandInDatris method of that name.
FAULT_METHODS: tuple[str, ...] = tuple(FAULT_KINDS)

# Server settings that belong to the command line (serve --host/--port) or are not data.
_SERVER_SETTINGS_EXCLUDED = frozenset({"host", "port", "self"})
_REQUIRE_API_KEYS = "require_api_keys"


class ConfigError(ValueError):
    """A stand-in configuration file (or table) that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class FaultSpec:
    """One ``[[fault]]`` entry: the fault method and its arguments."""

    kind: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class StandInConfig:
    """A parsed stand-in set-up. :meth:`new_stand_in` builds the server, :meth:`apply` fills it.

    :param source: where it was read from (shown in errors).
    :param server: keyword arguments for :class:`StandInDatris`.
    :param require_api_keys: whether ``useApiKeys`` is on.
    :param taps: keyword arguments for :meth:`StandInDatris.add_tap`, one mapping per tap.
    :param pipelines: keyword arguments for :meth:`StandInDatris.add_pipeline`.
    :param api_keys: keyword arguments for :meth:`StandInDatris.add_api_key`.
    :param faults: the faults to inject, in file order.
    :param other_client_runs: keyword arguments for ``StandInDatris.other_client_run``.
    """

    source: str = "<config>"
    server: Mapping[str, Any] = field(default_factory=dict)
    require_api_keys: bool = False
    taps: tuple[Mapping[str, Any], ...] = ()
    pipelines: tuple[Mapping[str, Any], ...] = ()
    api_keys: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)
    faults: tuple[FaultSpec, ...] = ()
    other_client_runs: tuple[Mapping[str, Any], ...] = ()

    @property
    def tap_names(self) -> list[str]:
        return [str(tap["name"]) for tap in self.taps]

    @property
    def api_key_labels(self) -> list[str]:
        return [str(key["label"]) for key in self.api_keys]

    def with_taps(self, names: Iterable[str]) -> StandInConfig:
        """This set-up plus a manual-only tap with default behaviour for each name not declared yet."""
        declared = set(self.tap_names)
        extra = tuple({"name": name} for name in dict.fromkeys(names) if name not in declared)
        return dataclasses.replace(self, taps=self.taps + extra)

    def new_stand_in(self, **settings: Any) -> StandInDatris:
        """A (not yet started) :class:`StandInDatris` with the ``[server]`` settings; ``settings`` win."""
        try:
            return StandInDatris(**{**self.server, **settings})
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{self.source}: [server]: {error}") from None

    def apply(self, stand_in: StandInDatris, *, other_client_runs: bool = True) -> None:
        """Declare the taps, pipelines, keys and faults on ``stand_in``, then start the other clients' runs.

        :param other_client_runs: False leaves the ``[[other_client_run]]`` entries out (a dry run).
        """
        for index, tap in enumerate(self.taps, 1):
            self._call(f"[[tap]] {_entry_name(index, tap)}", stand_in.add_tap, tap)
        for index, pipeline in enumerate(self.pipelines, 1):
            self._call(f"[[pipeline]] {_entry_name(index, pipeline)}", stand_in.add_pipeline, pipeline)
        if self.require_api_keys:
            stand_in.require_api_keys(True)
        for index, key in enumerate(self.api_keys, 1):
            self._call(f"[[api_key]] {index} (label {key['label']!r})", stand_in.add_api_key, key)
        for index, fault in enumerate(self.faults, 1):
            self._call(f"[[fault]] {index} ({fault.kind})", getattr(stand_in, fault.kind), fault.arguments)
        if not other_client_runs:
            return
        for index, run in enumerate(self.other_client_runs, 1):
            arguments = {key: value for key, value in run.items() if key != "tap"}
            self._call(
                f"[[other_client_run]] {index} (tap {run['tap']!r})", stand_in.other_client_run, arguments, run["tap"]
            )

    def check(self) -> None:
        """Raise :class:`ConfigError` now for anything :meth:`apply` would reject later."""
        scratch = self.new_stand_in()
        try:
            self.apply(scratch, other_client_runs=False)
            for index, run in enumerate(self.other_client_runs, 1):
                where = f"[[other_client_run]] {index} (tap {run['tap']!r})"
                if run["tap"] not in self.tap_names:
                    raise ConfigError(
                        f"{self.source}: [[other_client_run]] {index}: no [[tap]] named {run['tap']!r}; "
                        f"declare it, or use one of {self.tap_names}"
                    )
                # Checked by the stand-in's own rules; a run "now" is queued instead of started.
                arguments = {key: value for key, value in run.items() if key != "tap"}
                if arguments.get("when", "now") == "now":
                    arguments["when"] = "before_next_run"
                self._call(where, scratch.other_client_run, arguments, run["tap"])
        finally:
            scratch.stop()

    def _call(self, where: str, method: Callable[..., object], arguments: Mapping[str, Any], *positional: Any) -> None:
        try:
            method(*positional, **arguments)
        except (TypeError, ValueError, KeyError) as error:
            raise ConfigError(f"{self.source}: {where}: {error}") from None


def load_config(path: str | Path, *, extra_taps: Iterable[str] = ()) -> StandInConfig:
    """Read and check a stand-in TOML file.

    :param path: the file.
    :param extra_taps: names of manual-only taps with default behaviour to add (``serve --tap``).
    :raises ConfigError: the file is missing, not TOML, or declares something the stand-in cannot do.
    """
    path = Path(path)
    toml = _toml_module()
    try:
        with path.open("rb") as file:
            document = toml.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such stand-in configuration file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; name the stand-in's TOML file") from None
    except toml.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    config = parse_config(document, source=str(path)).with_taps(extra_taps)
    config.check()
    return config


def parse_config(document: Mapping[str, Any], *, source: str = "<config>") -> StandInConfig:
    """Turn a parsed TOML document into a :class:`StandInConfig` (types and keys checked).

    :param document: the TOML document as a mapping.
    :param source: the file name shown in errors.
    """
    _reject_unknown(source, "the top level", document, SECTIONS, "sections")
    server_table = _table(source, "[server]", document.get("server", {}))
    api_keys = tuple(
        _checked(source, f"[[api_key]] {index}", entry, _parameters(StandInDatris.add_api_key), secrets=("value",))
        for index, entry in enumerate(_array(source, "api_key", document), 1)
    )
    server_fields = {
        name: hint
        for name, hint in _parameters(StandInDatris.__init__).items()
        if name not in _SERVER_SETTINGS_EXCLUDED
    }
    server_fields[_REQUIRE_API_KEYS] = _Field(bool)
    server = _checked(source, "[server]", server_table, server_fields, required=())
    require_api_keys = bool(server.pop(_REQUIRE_API_KEYS, bool(api_keys)))

    tap_fields = _dataclass_fields(StandInTap)
    taps = tuple(
        _checked_tap(source, index, entry, tap_fields) for index, entry in enumerate(_array(source, "tap", document), 1)
    )
    _reject_duplicates(source, "tap", [str(tap["name"]) for tap in taps])
    pipeline_fields = _parameters(StandInDatris.add_pipeline)
    pipelines = tuple(
        _checked_pipeline(source, index, entry, pipeline_fields)
        for index, entry in enumerate(_array(source, "pipeline", document), 1)
    )
    _reject_duplicates(source, "pipeline", [str(pipeline["name"]) for pipeline in pipelines])
    faults = tuple(
        _checked_fault(source, index, entry) for index, entry in enumerate(_array(source, "fault", document), 1)
    )
    other_runs = tuple(
        _checked_other_run(source, index, entry)
        for index, entry in enumerate(_array(source, "other_client_run", document), 1)
    )
    return StandInConfig(
        source=source,
        server=server,
        require_api_keys=require_api_keys,
        taps=taps,
        pipelines=pipelines,
        api_keys=api_keys,
        faults=faults,
        other_client_runs=other_runs,
    )


# ---------------------------------------------------------------------------------------------- entries


def _checked_tap(source: str, index: int, entry: Any, fields: Mapping[str, _Field]) -> dict[str, Any]:
    where = f"[[tap]] {_entry_name(index, entry)}"
    tap = _checked(source, where, entry, fields, unknown_noun="tap fields")
    try:
        StandInTap(**tap).validate()
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: {where}: {error}") from None
    return tap


def _checked_pipeline(source: str, index: int, entry: Any, fields: Mapping[str, _Field]) -> dict[str, Any]:
    where = f"[[pipeline]] {_entry_name(index, entry)}"
    pipeline = _checked(source, where, entry, fields, unknown_noun="pipeline fields")
    try:
        StandInPipeline(**pipeline).validate()
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: {where}: {error}") from None
    return pipeline


def _checked_fault(source: str, index: int, entry: Any) -> FaultSpec:
    where = f"[[fault]] {index}"
    table = _table(source, where, entry)
    kind = table.get("kind")
    if kind not in FAULT_METHODS:
        raise ConfigError(
            f"{source}: {where}: kind must be one of {', '.join(FAULT_METHODS)}"
            + ("" if kind is None else f", not {kind!r}")
        )
    fields = _parameters(getattr(StandInDatris, kind))
    arguments = _checked(source, f"{where} ({kind})", {k: v for k, v in table.items() if k != "kind"}, fields)
    return FaultSpec(kind=kind, arguments=arguments)


def fault_arguments(kind: str) -> dict[str, bool]:
    """The arguments a fault kind takes (``route`` among them), each with whether it is required."""
    if kind not in FAULT_METHODS:
        raise ValueError(f"kind must be one of {', '.join(FAULT_METHODS)}, not {kind!r}")
    return {name: spec.required for name, spec in _parameters(getattr(StandInDatris, kind)).items()}


def _checked_other_run(source: str, index: int, entry: Any) -> dict[str, Any]:
    where = f"[[other_client_run]] {index}"
    fields = dict(_parameters(StandInDatris.other_client_run))
    # The file says `tap`, like the admin route; the method's first argument is the tap name.
    first = next(iter(fields))
    fields["tap"] = dataclasses.replace(fields.pop(first), required=True)
    return _checked(source, where, entry, fields)


def _entry_name(index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    return f"{index} ({name!r})" if isinstance(name, str) else str(index)


# ---------------------------------------------------------------------------------------------- checks


def _array(source: str, section: str, document: Mapping[str, Any]) -> list[Any]:
    value = document.get(section, [])
    if isinstance(value, Mapping):
        raise ConfigError(f"{source}: write [[{section}]] (one block per entry), not [{section}]")
    if not isinstance(value, list):
        raise ConfigError(f"{source}: {section} must be written as [[{section}]] blocks")
    return value


def _table(source: str, where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {where} must be a table of settings, not {_describe(value, shown=False)}")
    return value


def _reject_unknown(source: str, where: str, table: Mapping[str, Any], known: Iterable[str], noun: str) -> None:
    known = list(known)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: {where}: unknown key {key!r}{hint} Known {noun}: {', '.join(known)}")


def _reject_duplicates(source: str, section: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{source}: two [[{section}]] entries are named {name!r}; give each its own name")
        seen.add(name)


def _checked(
    source: str,
    where: str,
    entry: Any,
    fields: Mapping[str, _Field],
    *,
    required: Iterable[str] | None = None,
    unknown_noun: str = "keys",
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    table = _table(source, where, entry)
    _reject_unknown(source, where, table, fields, unknown_noun)
    needed = [name for name, spec in fields.items() if spec.required] if required is None else list(required)
    missing = [name for name in needed if name not in table]
    if missing:
        raise ConfigError(f"{source}: {where}: missing {', '.join(repr(name) for name in missing)}")
    checked: dict[str, Any] = {}
    for key, value in table.items():
        try:
            checked[key] = fields[key].convert(value)
        except _WrongType as wrong:
            given = _describe(value, shown=key not in secrets)
            raise ConfigError(f"{source}: {where}: {key!r} must be {wrong.expected}, not {given}") from None
    return checked


def _describe(value: Any, *, shown: bool = True) -> str:
    kinds = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    for kind, text in kinds.items():
        if type(value) is kind:
            return f"{text} ({value!r})" if shown else text
    return "a table" if isinstance(value, Mapping) else type(value).__name__


# ---------------------------------------------------------------------------------------------- types


class _WrongType(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True)
class _Field:
    """What one key accepts, read from the stand-in's own annotation."""

    hint: Any
    required: bool = False

    def convert(self, value: Any) -> Any:
        return _convert(value, self.hint)


_NONE = type(None)


def _options(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _convert(value: Any, hint: Any) -> Any:
    options = _options(hint)
    nullable = _NONE in options
    concrete = [option for option in options if option is not _NONE]
    if nullable and value is False and bool not in concrete:
        return None
    for option in concrete:
        try:
            return _convert_one(value, option)
        except _WrongType:
            continue
    expected = " or ".join(_expected(option) for option in concrete)
    raise _WrongType(expected + (" (or false for none)" if nullable and bool not in concrete else ""))


def _convert_one(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint) or hint
    if hint is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple) or _is_abc(origin, "Sequence"):
        if isinstance(value, list):
            (item,) = typing.get_args(hint)[:1] or (Any,)
            items = [_convert_one(element, item) for element in value]
            return tuple(items) if origin is tuple else items
    elif (origin is dict or _is_abc(origin, "Mapping")) and isinstance(value, Mapping):
        return dict(value)
    raise _WrongType(_expected(hint))


def _is_abc(origin: Any, name: str) -> bool:
    import collections.abc

    abc = getattr(collections.abc, name)
    return isinstance(origin, type) and issubclass(origin, abc)


def _expected(hint: Any) -> str:
    origin = typing.get_origin(hint) or hint
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(hint))
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin in (list, tuple) or _is_abc(origin, "Sequence"):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return "a list" if item is Any else f"a list of {_expected(item).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict or _is_abc(origin, "Mapping"):
        return "a table"
    return "a value"


def _expressible(hint: Any) -> bool:
    """Whether a TOML value can stand for the annotation (a threading.Event or a callable cannot)."""
    for option in _options(hint):
        if option is _NONE or option is Any:
            continue
        origin = typing.get_origin(option) or option
        if option in (bool, int, float, str) or origin in (list, tuple, dict, Literal):
            continue
        if _is_abc(origin, "Sequence") or _is_abc(origin, "Mapping"):
            continue
        return False
    return True


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)  # annotations of the stand-in's own code, never user input
    except Exception:
        return None  # a name only imported for type checking: not a TOML value either


def _namespace(obj: Any) -> dict[str, Any]:
    import collections.abc

    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    namespace: dict[str, Any] = {"Any": Any, "Literal": Literal, "collections": collections}
    namespace.update({name: getattr(collections.abc, name) for name in ("Mapping", "Sequence", "Callable")})
    namespace.update(vars(module) if module is not None else {})
    return namespace


def _parameters(function: Callable[..., object]) -> dict[str, _Field]:
    """The keyword-usable parameters of a stand-in method that a TOML value can fill."""
    namespace = _namespace(function)
    fields: dict[str, _Field] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        hint = _resolve(parameter.annotation, namespace)
        if hint is None or not _expressible(hint):
            continue
        fields[parameter.name] = _Field(hint, required=parameter.default is parameter.empty)
    return fields


def _dataclass_fields(cls: type) -> dict[str, _Field]:
    """The fields of a stand-in dataclass that a TOML value can fill."""
    namespace = _namespace(cls)
    fields: dict[str, _Field] = {}
    for item in dataclasses.fields(cls):
        if not item.init:
            continue
        hint = _resolve(item.type, namespace)
        if hint is None or not _expressible(hint):
            continue
        no_default = item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
        fields[item.name] = _Field(hint, required=no_default)
    return fields


def _toml_module() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:
        raise ConfigError(
            "reading a stand-in configuration file needs Python 3.11+, or `pip install tomli` on Python 3.10"
        ) from None
    return tomli
