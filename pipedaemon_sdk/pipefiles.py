"""Compatibility path: the module lives in :mod:`pipedaemon_sdk.protocol.pipefiles`.

``pipedaemon_sdk.pipefiles`` *is* that module (same objects, same classes), so old imports keep working.
"""

import sys

from .protocol import pipefiles as _module

sys.modules[__name__] = _module
