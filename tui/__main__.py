"""``python -m tui [DB] [--db DB] [--study NAME] [--interval SECONDS] [--wait]``: the live
dashboard; the same arguments as ``kerasgen tui``."""

from __future__ import annotations

import argparse
import sys

from kerasgen.options import HelpFormatter
from tui.app import add_arguments, main_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui", formatter_class=HelpFormatter,
                                     description="Live terminal dashboard of a kerasgen store.")
    add_arguments(parser)
    return main_from_args(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
