"""``python -m tui PATH [--study NAME] [--interval SECONDS]``: the live dashboard."""

from __future__ import annotations

import argparse
import sys

from tui.app import run_dashboard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui",
                                     description="Live terminal dashboard of a kerasgen store.")
    parser.add_argument("db", help="the store (a .db file); it may not exist yet")
    parser.add_argument("--study", help="show only this study")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between reads of the store (default 2)")
    args = parser.parse_args(argv)
    return run_dashboard(args.db, study=args.study, interval=args.interval)


if __name__ == "__main__":
    sys.exit(main())
