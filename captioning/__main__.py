"""``python -m captioning ...``: the ``captioning`` command (what the demo runs its background training with)."""

from captioning.cli import main

main()
