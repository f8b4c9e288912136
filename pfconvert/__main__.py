"""``python -m pfconvert`` runs the command-line interface."""

from .cli.app import main

main()
