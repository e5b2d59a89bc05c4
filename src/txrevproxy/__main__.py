"""
The ``txrevproxy`` console script: the twistd plugin run in the foreground, logging to stdout, on
:class:`~txrevproxy._daemon.reactor.ProxyReactor` where there is epoll.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from twisted.scripts.twistd import run

    from txrevproxy.tap import Options

    args = sys.argv[1:] if argv is None else argv
    Options().parseOptions(args)  # exits with a one-line error before twistd starts
    sys.argv = ["txrevproxy", "--nodaemon", "--pidfile=", *_reactor_option(), "txrevproxy", *args]
    run()


def _reactor_option() -> list[str]:
    # txrevproxy's own reactor where there is epoll (see txrevproxy._daemon.reactor); else twistd's default.
    import select

    return ["--reactor=txrevproxy"] if hasattr(select, "epoll") else []


if __name__ == "__main__":
    main()
