"""CLI commands for this area (registered by :mod:`irtscope.cli`)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
