"""``python -m harness``: the same as the ``harness`` console script."""

from harness.entry import main

main()
