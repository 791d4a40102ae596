"""``python -m scheduler`` runs the ``gearshift`` CLI."""

from scheduler.cli import main

main()
