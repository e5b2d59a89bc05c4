"""
The ``txrevproxy`` console script: the twistd plugin run in the foreground, logging to stdout.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from twisted.scripts.twistd import run

    from .tap import Options

    args = sys.argv[1:] if argv is None else argv
    Options().parseOptions(args)  # exits with a one-line error before twistd starts
    sys.argv = ["txrevproxy", "--nodaemon", "--pidfile=", "txrevproxy", *args]
    run()


if __name__ == "__main__":
    main()
