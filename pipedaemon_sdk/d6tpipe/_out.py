"""What d6tpipe prints (``pulling: 1.23MB``, README.md...), and how to silence it.

Messages go to stdout as d6tpipe prints them, unless ``quiet=True`` (on the api or
the pipe) or the logger ``pipedaemon_sdk.d6tpipe`` says otherwise: give it a level
above INFO (``setLevel(logging.WARNING)``) to silence them, or a handler of its own to
receive them as log records instead of prints.
"""

from __future__ import annotations

import logging

log = logging.getLogger("pipedaemon_sdk.d6tpipe")


def say(message: str, quiet: bool = False) -> None:
    if quiet or log.disabled or (log.level and log.level > logging.INFO):
        return
    if log.handlers:
        log.info(message)
    else:
        print(message)


def ask(prompt: str) -> str:
    """d6tpipe's ``input()`` question; without a terminal the answer is no, never a hang."""
    from .exceptions import PermissionDeniedError

    try:
        return input(prompt).strip().lower()
    except EOFError:
        raise PermissionDeniedError(
            f"{prompt!r} needs an answer on a terminal; pass confirm=False to delete without asking",
            {"reason": "no terminal"}) from None
