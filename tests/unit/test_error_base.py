"""One error base: every exception class of ``app`` and ``agents`` is a `PsoError` carrying an
exit code that says what the failure means, and keeps its builtin base for ``except``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import agents
import app
import app.core.errors
import app.errors
from app.errors import ExitCode, PsoError


def _modules() -> list[ModuleType]:
    found = []
    for package in (app, agents):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[-1] != "__main__":  # running it is running the CLI
                found.append(importlib.import_module(info.name))
    return found


def _exception_classes() -> dict[str, type[BaseException]]:
    return {
        f"{module.__name__}.{name}": obj
        for module in _modules()
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__
    }


def test_every_exception_class_derives_from_pso_error() -> None:
    classes = _exception_classes()
    # The walk sees them all (a walk that found nothing would pass vacuously).
    assert {
        "app.core.snapshot.SnapshotRejected",
        "app.dev.broker.errors.BrokerError",
        "app.settings.ConfigError",
        "app.kafka.connection.BrokerUnreachable",
        "agents.checkpoints.ReplayStalled",
    } <= set(classes)
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, PsoError))
    assert strays == []
    for name, cls in classes.items():
        assert issubclass(cls, PsoError)  # for mypy
        assert cls.exit_code in set(ExitCode), name


def test_the_core_owns_the_base_and_app_errors_reexports_it() -> None:
    assert app.errors.PsoError is app.core.errors.PsoError
    assert app.errors.ExitCode is app.core.errors.ExitCode


@pytest.mark.parametrize(
    ("path", "builtin", "code"),
    [
        ("app.settings.ConfigError", ValueError, ExitCode.USER_ERROR),
        ("app.kafka.client.InvalidSample", ValueError, ExitCode.USER_ERROR),
        ("app.kafka.connection.BrokerUnreachable", ConnectionError, ExitCode.USER_ERROR),
        ("app.kafka.range.TopicNotFound", LookupError, ExitCode.USER_ERROR),
        ("app.wire.records.InvalidPolicy", ValueError, ExitCode.USER_ERROR),
        ("app.offline.backtest.BacktestError", ValueError, ExitCode.USER_ERROR),
        ("app.offline.series_file.SeriesFileError", ValueError, ExitCode.USER_ERROR),
        ("app.core.snapshot.SnapshotRejected", ValueError, ExitCode.USER_ERROR),
        ("app.dev.broker.errors.BrokerError", Exception, ExitCode.USER_ERROR),
        ("app.errors.UsageError", Exception, ExitCode.USER_ERROR),
        ("agents.checkpoints.ReplayStalled", RuntimeError, ExitCode.RUNTIME_FAILURE),
    ],
)
def test_each_error_keeps_its_builtin_base_and_says_its_exit_code(
    path: str, builtin: type[Exception], code: ExitCode
) -> None:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(builtin):  # an existing ``except ValueError`` still catches it
        raise cls("one line")
    assert cls.exit_code == code
    assert str(cls("one line")) == "one line"


def test_exit_codes() -> None:
    assert (ExitCode.USER_ERROR, ExitCode.RUNTIME_FAILURE) == (2, 3)
