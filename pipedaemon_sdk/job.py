"""Handles on daemon jobs: follow their progress, wait for them, cancel them.

AsyncJob is written in ``_async/job.py``; Job is generated from it (``tools/unasync.py``).
"""

from ._async.job import AsyncJob
from ._common import ProgressCallback, call_safely, lost, outcome
from ._sync.job import Job

__all__ = ["AsyncJob", "Job", "ProgressCallback", "call_safely", "lost", "outcome"]
