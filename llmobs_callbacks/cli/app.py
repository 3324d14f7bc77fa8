"""The ``llmobs`` Typer app, and ``main``: the console script's entry point.

``main`` runs the app without Click's standalone mode, so every exit is a return value and every
error goes through one place: usage errors (an unknown option, a value of the wrong type) and
``UserError``s print one line and return 2; anything unexpected prints one line and returns 1.
``--debug`` (anywhere on the command line) also prints the traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from . import anomalies, browse, demo, export, gate, judge, report, serve
from .errors import Settings, print_error
from .errors import report as report_error

# Typer raises Click's exceptions (its vendored copy in recent versions, click's in older ones):
# the base class of the ones it raises for usage errors is the one BadParameter derives from.
ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)

app = typer.Typer(
    name="llmobs",
    help="In-process LLM observability: look at the traces, costs and quality your app recorded.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"llmobs-callbacks {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit"),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="print the traceback of an error too")] = False,
) -> None:
    """In-process LLM observability: look at the traces, costs and quality your app recorded."""
    if debug:
        Settings.debug = True


for module in (demo, report, browse, anomalies, gate, judge, export, serve):
    module.register(app)


def _command_name(command: object, argv: Sequence[str]) -> str:
    """``llmobs <command>`` for error messages (the first word that is not an option)."""
    names = set(getattr(command, "commands", {}))
    word = next((a for a in argv if not a.startswith("-")), None)
    return f"llmobs {word}" if word in names else "llmobs"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``llmobs`` with ``argv`` (default: the process's arguments); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    Settings.debug = "--debug" in args[:cut]
    args = [a for i, a in enumerate(args) if not (i < cut and a == "--debug")]
    command = typer.main.get_command(app)
    name = _command_name(command, args)
    try:
        result = command.main(args=args, prog_name="llmobs", standalone_mode=False)
    except ClickException as exc:  # a usage error: Click's message, one line
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and context is not None:  # `llmobs` alone
            print(context.get_help())
            return 2
        where = context.command_path if context is not None else name
        message = exc.format_message()  # type: ignore[attr-defined]
        code = int(getattr(exc, "exit_code", 2))
        hint = f" (see '{where} --help')" if code == 2 else ""
        print_error(where, f"{message}{hint}")
        return code
    except KeyboardInterrupt:
        print_error(name, "interrupted")
        return 130
    except SystemExit as exc:  # Click exits by itself on a broken pipe (`llmobs traces | head`)
        return exc.code if isinstance(exc.code, int) else 1
    except typer.Abort:  # pragma: no cover - an EOF at a prompt (no command prompts)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line (the traceback with --debug), never a crash dump
        return report_error(name, exc)
    finally:
        Settings.debug = False
    return int(result or 0)
