"""Compatibility path: the module lives in :mod:`pipedaemon_sdk.protocol.wire`.

``pipedaemon_sdk.wire`` *is* that module (same objects, same classes), so old imports keep working.
"""

import sys

from .protocol import wire as _module

sys.modules[__name__] = _module
