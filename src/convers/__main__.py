"""`python -m convers` runs the CLI."""

from convers.cli import main

main()
