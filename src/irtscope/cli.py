"""Command-line interface: ``irtscope trials ...`` and ``irtscope imaging ...``.

Commands stay thin: they parse options, call one library function, and render its result.
Each area registers its commands from its own ``_cli*.py`` module so the halves stay separate.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from irtscope import __version__
from irtscope._console import err_console, set_quiet
from irtscope._errors import IrtscopeError

app = typer.Typer(
    name="irtscope",
    help="Immunoradiotherapy (iRT) research toolkit for NSCLC.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
trials_app = typer.Typer(help="ClinicalTrials.gov trial landscape.", no_args_is_help=True)
imaging_app = typer.Typer(help="Radiomics and deep-learning outcome models.", no_args_is_help=True)
app.add_typer(trials_app, name="trials")
app.add_typer(imaging_app, name="imaging")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"irtscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or chatter (for scripts).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    set_quiet(quiet)


def _register_all() -> None:
    from irtscope.imaging import _cli_deep, _cli_features, _cli_models, _cli_simulate
    from irtscope.trials import _cli_changes, _cli_ingest, _cli_report, _cli_screen

    for module in (_cli_ingest, _cli_screen, _cli_report, _cli_changes):
        module.register(trials_app)
    for module in (_cli_features, _cli_simulate, _cli_models, _cli_deep):
        module.register(imaging_app)


_register_all()


def main() -> None:
    """Console-script entry point: library errors become one stderr line and exit code 1."""
    try:
        app()
    except IrtscopeError as exc:
        # the message may quote registry or manifest text: never interpret it as Rich markup
        err_console.print(
            "[bold red]error:[/] " + escape(str(exc)), highlight=False, soft_wrap=True
        )
        raise SystemExit(1) from None
