"""When the command line started: ``triage run`` reports wall time from here.

Imported first by the package, so imports and Prefect's temporary server count in the wall time,
as a user waiting at the prompt sees them.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()
