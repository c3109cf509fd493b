"""
The asyncio streams line echo of C{asyncio_echo.py}, on uvloop's event loop.
"""

from __future__ import annotations

import uvloop
from _common import parse_args
from asyncio_echo import serve


def main() -> None:
    """
    Run the same server on uvloop.
    """
    options = parse_args(__doc__ or "")
    uvloop.run(serve(options.port))


if __name__ == "__main__":
    main()
