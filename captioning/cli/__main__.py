"""``python -m captioning.cli ...``: the ``captioning`` command."""

from captioning.cli import main

main()
