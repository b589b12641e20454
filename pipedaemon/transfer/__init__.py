"""The transfer engine: every byte the daemon moves goes through here.

Policy lives here, not in backends (safety rule 1): temporary names, verification
(size, and the S3 ETag or part md5s where the storage has them), retries per chunk,
resume after a crash, stream and bandwidth limits. ``download`` and ``upload`` move
one file; callers run several at once for many files.
"""

from ..backends.base import TransientError
from .common import PARALLEL_THRESHOLD, Tuning, chunk_size_for, is_temp, temp_name
from .download import download, verify_local
from .limits import Limits, TokenBucket
from .resume import ResumeSlot, forget_job
from .streamup import upload_stream, upload_stream_resumable
from .upload import upload

__all__ = [
    "PARALLEL_THRESHOLD", "Limits", "ResumeSlot", "TokenBucket", "TransientError", "Tuning",
    "chunk_size_for", "download", "forget_job", "is_temp", "temp_name", "upload", "upload_stream",
    "upload_stream_resumable", "verify_local",
]
