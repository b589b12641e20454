"""The SDK's asyncio code, written once: ``tools/unasync.py`` generates the blocking ``_sync/``
from these files (edit here, then run ``python tools/unasync.py``)."""

from .connection import AsyncConnection

__all__ = ["AsyncConnection"]
