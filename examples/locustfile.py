"""Load-test a deployed crumb issuer and its services with the simulator's device workload.

    CRUMB_CREDENTIALS=creds/ CRUMB_GATEWAY=http://gw:8101 locust -f examples/locustfile.py

docs/simulator.md ("Beyond one machine: Locust") lists the settings and the
distributed command lines; the User is crumb.tooling.sim.locust.CrumbDevice.
"""

from crumb.tooling.sim.locust import CrumbDevice  # noqa: F401  (Locust runs every User it finds here)
