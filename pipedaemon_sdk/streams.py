"""Object bytes over their own connection, never inside JSON (see ``_async/streams.py``, where
they are written once; the blocking functions are generated from it by ``tools/unasync.py``)."""

from ._async.streams import AsyncObjectStream, async_open_read, async_write
from ._common import PIECE, check_data, parse_header, request_line
from ._sync.streams import ObjectStream, open_read, write

__all__ = ["PIECE", "AsyncObjectStream", "ObjectStream", "async_open_read", "async_write", "check_data",
           "open_read", "parse_header", "request_line", "write"]
