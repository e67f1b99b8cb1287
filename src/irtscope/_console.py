"""Shared Rich console and progress helpers for the CLI.

Library code never prints: it accepts an optional ``progress`` callback
(``callback(advance: int, total: int | None, description: str)``). The CLI builds that callback
here, so every long command shows the same Rich progress bar on stderr, and ``--quiet``
silences all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

ProgressCallback = Callable[[int, "int | None", str], None]

err_console = Console(stderr=True)
out_console = Console()

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Silence progress bars and informational output (for scripts)."""
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def info(message: str) -> None:
    """Print an informational line to stdout unless ``--quiet``."""
    if not _state["quiet"]:
        # soft_wrap: long lines (paths, counts) stay whole when piped into a file or script
        out_console.print(message, soft_wrap=True)


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[ProgressCallback]:
    """Yield a progress callback backed by a Rich bar on stderr (a no-op when quiet)."""
    if _state["quiet"]:
        yield lambda advance, total=None, desc="": None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=total)

        def callback(advance: int, total: int | None = None, desc: str = "") -> None:
            if total is not None:
                bar.update(task, total=total)
            if desc:
                bar.update(task, description=desc)
            bar.advance(task, advance)

        yield callback
