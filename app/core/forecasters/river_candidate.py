"""Any river forecaster as an extra candidate of `app.core.forecast.SeriesForecaster`.

Owns two things, both pure (no file, no clock):

* Parsing an entry of ``prediction.extra_candidates`` such as
  ``"river.time_series.SNARIMAX(p=2, d=0, q=1)"`` — safely: the text is parsed with `ast`,
  never evaluated. Allowed: a dotted path under ``river.`` (no private part) to a concrete class
  that is a `river.time_series.base.Forecaster`, called with literal arguments only (numbers,
  strings, booleans, None, and tuples or lists of those). The class is instantiated once with
  those arguments, so a wrong argument is reported when ``pso.yaml`` loads, not in a worker.
* `RiverCandidate`: one series' own instance of such a model, fed window values and asked for
  ``horizon`` forecasts; a model that raises or returns a wrong or non-finite forecast is
  *benched* for that window (its row is not used, the reason is kept and counted), never fatal.

Imports river and numpy only (and the shared array type).
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from river import time_series

from app.core.errors import PsoError
from app.core.forecasters.phase import FloatArray

#: Literal argument values an entry may carry.
Literal = int | float | str | bool | None | tuple[Any, ...] | list[Any]

_MAX_ABS = 1e100  # what the forecaster clips values to: candidates' forecasts too
_REASON_CHARS = 60


class CandidateError(PsoError, ValueError):
    """An ``extra_candidates`` entry cannot be used; the message names the entry and why."""


@dataclass(frozen=True, slots=True)
class CandidateSpec:
    """A parsed, validated entry: which river class, with which literal arguments.

    Examples
    --------
    >>> spec = parse_candidate("river.time_series.SNARIMAX(p=2, d=0, q=1)")
    >>> spec.name, spec.path, spec.kwargs
    ('snarimax', 'river.time_series.SNARIMAX', (('p', 2), ('d', 0), ('q', 1)))
    >>> type(spec.build()).__name__
    'SNARIMAX'
    """

    entry: str
    name: str
    path: str
    args: tuple[Literal, ...] = ()
    kwargs: tuple[tuple[str, Literal], ...] = ()

    def build(self) -> time_series.base.Forecaster:
        """A fresh, untrained instance (river models are stateful: one per series)."""
        cls = _resolve(self.path)
        # Deep copies: a list argument must not be shared between series.
        model: time_series.base.Forecaster = cls(
            *copy.deepcopy(self.args), **copy.deepcopy(dict(self.kwargs))
        )
        return model


def parse_candidate(entry: str, name: str | None = None) -> CandidateSpec:
    """Parse and validate one entry; raise `CandidateError` (one line naming it) if unusable.

    Examples
    --------
    >>> parse_candidate("river.time_series.HoltWinters(alpha=0.3)").name
    'holtwinters'
    >>> try:
    ...     parse_candidate("open('pso.yaml')")
    ... except CandidateError as exc:
    ...     print(exc)
    "open('pso.yaml')": not a river class (e.g. river.time_series.SNARIMAX(p=2, d=0, q=1))
    """

    def fail(why: str) -> CandidateError:
        return CandidateError(f"{entry!r}: {why}")

    try:
        tree = ast.parse(entry.strip(), mode="eval")
    except SyntaxError as exc:
        raise fail(f"not a Python expression ({exc.msg})") from None
    node = tree.body
    call_args: list[ast.expr] = []
    keywords: list[ast.keyword] = []
    if isinstance(node, ast.Call):
        call_args, keywords, node = node.args, node.keywords, node.func
    path = _dotted(node)
    if path is None or path.split(".")[0] != "river":
        raise fail("not a river class (e.g. river.time_series.SNARIMAX(p=2, d=0, q=1))")
    if any(part.startswith("_") for part in path.split(".")):
        raise fail(f"{path}: private names are not allowed")
    args = []
    for arg in call_args:
        value = _literal(arg)
        if value is _NOT_LITERAL:
            raise fail(f"bad argument {ast.unparse(arg)!r}: only literal values are allowed")
        args.append(value)
    kwargs = []
    for kw in keywords:
        if kw.arg is None:
            raise fail("bad argument: **kwargs is not allowed")
        value = _literal(kw.value)
        if value is _NOT_LITERAL:
            raise fail(
                f"bad argument {kw.arg}={ast.unparse(kw.value)}: only literal values are allowed"
            )
        kwargs.append((kw.arg, value))
    try:
        cls = _resolve(path)
    except LookupError as exc:
        raise fail(f"unknown class {path} ({exc.args[0]})") from None
    if not (inspect.isclass(cls) and issubclass(cls, time_series.base.Forecaster)):
        raise fail(f"{path} is not a river forecaster (river.time_series.base.Forecaster)")
    if inspect.isabstract(cls):
        raise fail(f"{path} is abstract")
    spec = CandidateSpec(entry, name or cls.__name__.lower(), path, tuple(args), tuple(kwargs))
    try:
        inspect.signature(cls).bind(*spec.args, **dict(spec.kwargs))
        spec.build()
    except Exception as exc:  # the model's own check of its arguments, whatever it raises
        raise fail(f"bad argument for {path}: {_reason(exc)}") from None
    return spec


def parse_candidates(
    entries: Iterable[str | CandidateSpec], taken: Sequence[str] = ()
) -> tuple[CandidateSpec, ...]:
    """Parse every entry; names are the class names in lower case, made unique (``snarimax``,
    ``snarimax_2``...) and distinct from ``taken`` (the built-in candidates)."""
    used = set(taken)
    specs = []
    for entry in entries:
        spec = entry if isinstance(entry, CandidateSpec) else parse_candidate(entry)
        name, k = spec.name, 1
        while name in used:
            k += 1
            name = f"{spec.name}_{k}"
        used.add(name)
        if name != spec.name:
            spec = CandidateSpec(spec.entry, name, spec.path, spec.args, spec.kwargs)
        specs.append(spec)
    return tuple(specs)


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attribute accesses on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


_NOT_LITERAL: Any = object()


def _literal(node: ast.expr) -> Any:
    """The value of a literal node (see the module docstring), or ``_NOT_LITERAL``."""
    if isinstance(node, ast.Constant):
        value = node.value
        ok = value is None or isinstance(value, bool | int | float | str)
        return value if ok else _NOT_LITERAL
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _NOT_LITERAL
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Tuple | ast.List):
        items = [_literal(item) for item in node.elts]
        if any(item is _NOT_LITERAL for item in items):
            return _NOT_LITERAL
        return tuple(items) if isinstance(node, ast.Tuple) else items
    return _NOT_LITERAL


def _resolve(path: str) -> Any:
    """The object at ``path`` (``river.x.Y``): import the longest module prefix, then walk the
    attributes. Raises LookupError with what was missing."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # that prefix is not a module: try a shorter one
            raise LookupError(f"importing {module_name} failed: {exc}") from None
        except ImportError as exc:
            raise LookupError(f"importing {module_name} failed: {exc}") from None
        for i, attr in enumerate(parts[cut:], start=cut):
            if not hasattr(obj, attr):
                raise LookupError(f"{'.'.join(parts[:i])} has no {attr}")
            obj = getattr(obj, attr)
        return obj
    raise LookupError(f"no module {parts[0]}")


def _reason(exc: BaseException) -> str:
    """A short, one-line reason: ``"IndexError: deque index out of range"``."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


class RiverCandidate:
    """One series' instance of a river forecaster, fed window values in event-time order.

    A call that raises, or a forecast that is not ``horizon`` finite numbers, benches the
    candidate for that window: `forecast_into` returns False, `benched` counts it and
    `reason` says why (``"IndexError: ..."``, ``"non-finite forecast"``...). The next window
    tries again (river's HoltWinters raises until it has seen one season, then works).

    Examples
    --------
    >>> import numpy as np
    >>> c = RiverCandidate(parse_candidate("river.time_series.HoltWinters(alpha=0.5)"))
    >>> row = np.zeros(2)
    >>> c.forecast_into(row), c.reason  # nothing learned yet: river raises, PSO benches
    (False, 'IndexError: deque index out of range')
    >>> c.learn(1.0); c.learn(3.0)
    >>> c.forecast_into(row), row.tolist(), c.benched, c.ok
    (True, [2.0, 2.0], 1, True)
    """

    __slots__ = ("benched", "failed", "model", "name", "ok", "reason")

    def __init__(self, spec: CandidateSpec) -> None:
        self.name = spec.name
        self.model = spec.build()
        self.benched = 0  # windows this candidate was left out of the blend
        self.reason = ""  # why, the last time
        self.ok = False  # whether the current forecast is usable
        self.failed = False  # learning raised since the last forecast

    def __getstate__(self) -> dict[str, object]:
        return {key: getattr(self, key) for key in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def learn(self, y: float) -> None:
        """Learn the next window's value. If the model raises, its next forecast is benched."""
        try:
            self.model.learn_one(y)
        except Exception as exc:  # a model's failure is its own: never the engine's
            if not self.failed:
                self.failed = True
                self.reason = _reason(exc)

    def forecast_into(self, row: FloatArray) -> bool:
        """Write the next ``len(row)`` windows' forecast into ``row`` (clipped to ±1e100);
        False (row zeroed, counted in `benched`) if the model raised (here or while learning
        since the last forecast) or returned a bad forecast. Sets `ok` to the result."""
        horizon = len(row)
        try:
            if self.failed:
                self.failed = False
                raise _Bad(self.reason)
            values = self.model.forecast(horizon)
            if len(values) != horizon:
                raise _Bad(f"returned {len(values)} values for a horizon of {horizon}")
            for i, v in enumerate(values):
                v = float(v)
                if not math.isfinite(v):
                    raise _Bad("non-finite forecast")
                row[i] = _MAX_ABS if v > _MAX_ABS else (-_MAX_ABS if v < -_MAX_ABS else v)
        except Exception as exc:  # a model's failure is its own: never the engine's
            self.bench(exc.args[0] if isinstance(exc, _Bad) else _reason(exc))
            row[:] = 0.0  # finite: multiplied by a zero weight, its errors never learned
            self.ok = False
            return False
        self.ok = True
        return True

    def bench(self, reason: str) -> None:
        """Leave this candidate out of the current window's blend, for ``reason``."""
        self.benched += 1
        self.reason = reason


class _Bad(PsoError):
    """A forecast that returned but cannot be used."""
