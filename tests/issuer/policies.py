"""Policies the suite serves (node keys are fixed test keys)."""

from crumb.keys import SigningKey, b64u

NODE_KEYS = {name: SigningKey(bytes([i + 1]) * 32) for i, name in enumerate(("gateway", "ingest", "fleet-gw"))}


def node(name: str) -> str:
    return b64u(NODE_KEYS[name].public.raw)


POLICY = f"""
[issuer]
name = "crumb-test"
url = "http://127.0.0.1:1"
max_skew = 30
hop_refs = "kid"
max_request_bytes = 1024

[defaults]
ttl = 60
batch = 4
rate = 1000
burst = 1000

[nodes]
gateway = "{node('gateway')}"
ingest = "{node('ingest')}"
fleet-gw = "{node('fleet-gw')}"

[groups.sensors]
batch = 6

[[groups.sensors.allow]]
resource = "/sensors/*"
operations = ["read", "publish"]
ttl = 120

[[groups.sensors.allow]]
resource = "/config/sensors"
operations = ["read"]
uses = 3

[[groups.sensors.allow]]
resource = "/chained/*"
operations = ["publish"]
chain = ["gateway", "ingest"]
attenuators = ["fleet-gw"]

[[groups.sensors.allow]]
resource = "/ota/image"
operations = ["GET", "FETCH"]
audience = "ota"

[groups.slow]
# One token back every 100 s: none comes back while a test runs, however slow the machine.
rate = 0.01
burst = 2
batch = 2

[[groups.slow.allow]]
resource = "/slow/*"
operations = ["read"]

[devices.policy-only-1]
group = "sensors"

[devices.special-1]
group = "sensors"

[[devices.special-1.allow]]
resource = "/valves/7"
operations = ["open"]
ttl = 10
"""
