"""Compatibility path: the module lives in :mod:`pipedaemon_sdk.protocol.errors`.

``pipedaemon_sdk.errors`` *is* that module (same objects, same classes), so old imports keep working.
"""

import sys

from .protocol import errors as _module

sys.modules[__name__] = _module
