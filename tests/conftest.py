"""Settings for the whole suite."""

import os

from hypothesis import HealthCheck, settings

# A property test gives the same answer every run and on any machine: the same
# examples each time (derived from the test, not drawn at random; no example
# database carried over from earlier runs), and no limit on how long an example
# or its generation may take. HYPOTHESIS_PROFILE=explore draws fresh examples.
_UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("suite", derandomize=True, database=None, **_UNTIMED)
settings.register_profile("explore", **_UNTIMED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))
