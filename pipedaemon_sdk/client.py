"""PipeClient (blocking) and AsyncPipeClient (asyncio): the SDK's entry points.

AsyncPipeClient is written in ``_async/client.py``; PipeClient is generated from it into
``_sync/client.py`` by ``tools/unasync.py``.
"""

from ._async.client import AsyncPipeClient
from ._sync.client import PipeClient

__all__ = ["AsyncPipeClient", "PipeClient"]
