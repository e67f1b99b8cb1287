"""``python -m irtscope`` runs the CLI."""

from irtscope.cli import main

main()
