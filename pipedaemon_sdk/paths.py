"""Compatibility path: the module lives in :mod:`pipedaemon_sdk.protocol.paths`.

``pipedaemon_sdk.paths`` *is* that module (same objects, same classes), so old imports keep working.
"""

import sys

from .protocol import paths as _module

sys.modules[__name__] = _module
