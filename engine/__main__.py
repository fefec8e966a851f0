"""python -m engine: the same as the fanout command."""

from .cli import main

main()
