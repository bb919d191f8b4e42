"""Print the sizes of the largest /token answers over CoAP, as JSON (PROTOCOL.md §13.4 quotes them).

    PYTHONPATH=host:device python tools/coap_sizes.py

A real issuer (`crumb issuer serve --coap`) with a policy at the ceilings a
policy can set (batch = MAX_BATCH, a chain of three nodes and an attenuator,
hop_refs = "key", an audience), asked by the device's own client for one
token, then full batches. For each: the answer's payload bytes, and how many
datagrams (Block2 blocks of 1024 bytes) it took.
"""

from __future__ import annotations

import json
import sys
from binascii import unhexlify

from crumb.keys import SigningKey, b64u
from crumb.tooling.bench.device import DeviceIssuer
from crumb.wire import MAX_BATCH

NODES = {name: b64u(SigningKey(bytes([i + 1]) * 32).public.raw) for i, name in enumerate(("gw", "ingest", "db", "fleet"))}
RESOURCE = "/chained/site-0042/building-7/floor-3/room-12/sensor-0001"
POLICY = f"""
[issuer]
name = "crumb-issuer.example"
hop_refs = "key"

[defaults]
ttl = 3600
batch = {MAX_BATCH}
rate = 1000
burst = 1000

[nodes]
{chr(10).join(f'{n} = "{k}"' for n, k in NODES.items())}

[groups.sensors]
[[groups.sensors.allow]]
resource = "/chained/*"
operations = ["read", "publish"]
uses = 1000
chain = ["gw", "ingest", "db"]
attenuators = ["fleet"]
audience = "ingest.example"
"""


def main() -> None:
    from ucrumb import client, coap

    class Issuer(DeviceIssuer):
        args = ("--coap", "--coap-port", "0")

    blocks: list[int] = []
    real = coap.request

    def counting(*a, **kw):  # count the datagrams of each answer through the device's own _transact
        inner = coap._transact
        n = [0]

        def tx(*b):
            n[0] += 1
            return inner(*b)

        coap._transact = tx
        try:
            return real(*a, **kw)
        finally:
            coap._transact = inner
            blocks.append(n[0])

    coap.request = counting
    out = {}
    with Issuer(POLICY, devices={"sensor-0001": "sensors"}) as iss:
        key = unhexlify(iss.creds["sensor-0001"]["key"])
        url = f"coap://127.0.0.1:{iss.local.coap_port}"
        for n in (1, 8, MAX_BATCH):
            c = client.Client(url, "sensor-0001", key, batch=n, audience="ingest.example", max_entries=1)
            sizes = []
            real_post = c._post

            def post(body, max_body, sizes=sizes, real_post=real_post):
                st, h, data = real_post(body, 64 * 1024)
                sizes.append(len(data))
                return st, h, data

            c._post = post
            c.token(RESOURCE, "publish")
            out[f"batch_{n}"] = {"bytes": sizes[-1], "datagrams": blocks[-1],
                                 "token_bytes": len(c._cache[(RESOURCE, "publish")][2][0])}
    out["one_datagram_payload"] = 1024
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
