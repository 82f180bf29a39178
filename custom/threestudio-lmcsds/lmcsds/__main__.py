"""python -m lmcsds ... (same as the lmcsds command)."""

from .cli import main

main()
