"""The ``pso`` command line (typer + rich): the commands, and the one place that decides how
a failure is shown.

Every failure a user can cause (bad argument, unusable file, bad config, unreachable broker)
is one readable line on stderr and the error's exit code (2; 3 for a run that failed on its
way and may succeed on a restart: `app.errors.ExitCode`), decided in `main`. Arguments are
checked while parsing (typer/click checks and callbacks), so a command that talks to Kafka
fails on a bad argument before any network. Each command lives in a module of its own here;
nothing of PSO imports this package.
"""

from __future__ import annotations

import sys

import typer
from rich.text import Text

from app.cli import backtest, demo, produce, replay, series, simulate, tail, worker
from app.cli.bench import bench_cli
from app.cli.broker import broker_cli
from app.cli.common import err_console
from app.cli.schemas import schemas_cli
from app.cli.topics import topics_cli
from app.errors import ExitCode, PsoError, path_error_message

cli = typer.Typer(
    name="pso",
    help="PSO, the predictive system orchestrator: forecasts shared-resource conflicts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cli.add_typer(broker_cli, name="broker")
cli.command()(worker.worker)
cli.command()(demo.demo)
cli.command()(simulate.simulate)
cli.command()(produce.produce)
cli.command()(tail.tail)
cli.add_typer(topics_cli, name="topics")
cli.add_typer(schemas_cli, name="schemas")
cli.add_typer(bench_cli, name="bench")
cli.command("backtest")(backtest.backtest)
cli.command("replay")(replay.replay_cmd)
cli.command("score-anomalies")(series.score_anomalies_cmd)
cli.command("forecast")(series.forecast_cmd)


def user_error_message(exc: BaseException) -> str | None:
    """The one line to show for an error PSO raised on purpose; None for a bug (keeps its
    traceback).

    The one place that decides: a `PsoError` (every exception class of ``app`` and ``agents``
    derives from it), typer/click's usage errors, and an `OSError` about a path (missing, a
    directory, not allowed...). Anything else is a bug.
    """
    if isinstance(exc, PsoError):
        return str(exc)
    if isinstance(exc, typer.TyperException):  # click's usage errors (typer vendors click)
        return exc.format_message()
    if isinstance(exc, OSError):
        return path_error_message(exc)
    return None


def _print_error(message: str) -> None:
    if message:  # a usage error that showed the help instead has no message of its own
        err_console.print(
            Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True
        )


def main() -> None:
    """Run the CLI: a `PsoError` is one line on stderr and its exit code; a bug raises."""
    import logging

    if sys.argv[1:2] != ["worker"]:
        # Client libraries log connection retries as warnings; the CLI says it in one line.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        code = cli(standalone_mode=False)  # returns the exit code of typer.Exit
        if isinstance(code, int) and code:
            sys.exit(code)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise  # a bug: the traceback says where
        _print_error(message)
        sys.exit(exc.exit_code if isinstance(exc, PsoError) else ExitCode.USER_ERROR)


if __name__ == "__main__":
    main()
