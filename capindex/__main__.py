"""`python -m capindex ...`: the `capindex` command, for environments without its script."""

from capindex.cli import main

main(prog_name="capindex")
