"""``python -m p2m`` is the ``p2m`` command."""

from p2m.cli import main

main()
