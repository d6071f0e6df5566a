"""``python -m unigrpo_kit.sweep ...``: ``unigrpo-kit ablate`` without the rest of the CLI."""

from .command import main

main()
