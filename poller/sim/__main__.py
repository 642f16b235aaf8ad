"""``python -m poller.sim``: the emulator without the rest of the ``poller`` command."""

import argparse

from poller.sim.cli import DESCRIPTION, EPILOG, configure_parser

parser = argparse.ArgumentParser(
    prog="python -m poller.sim",
    description=DESCRIPTION,
    epilog=EPILOG,
    formatter_class=argparse.RawDescriptionHelpFormatter,
)
configure_parser(parser)
arguments = parser.parse_args()
raise SystemExit(arguments.func(arguments))
