"""The clock of epochauth's process caches: their lifetimes, refresh intervals and cool-downs.

They read the time here, through one seam, so that tests move it (the ``clock`` fixture) instead of
sleeping through a lifetime. So does the device flow's polling interval (``epochauth.oauth``), which
only our processes write and compare. Token times (``exp``, ``iat``, ``nbf``) and the denylist's
expiries keep the real clock: they are compared with times other parties wrote, not measured within
this process.
"""

import time
from collections.abc import Callable

#: POSIX time, for cache times other processes read too (the JWKS in the shared cache).
wall: Callable[[], float] = time.time
#: For intervals only this process measures.
monotonic: Callable[[], float] = time.monotonic
