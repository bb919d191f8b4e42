# Inside MicroPython: ucrumb.verify's verdict on each case of /diff/cases.json
# (written by tests/device/test_device_verify.py from verify_diff.cases), one
# "@@R <index> <code>" line each, then "@@DONE".
import json
from binascii import unhexlify

from ucrumb.verify import Refused, Verifier

with open("/diff/cases.json") as f:
    doc = json.load(f)
issuer = unhexlify(doc["issuer"])
nodes = [unhexlify(k) for k in doc["nodes"]]
for i, case in enumerate(doc["cases"]):
    cfg = case["verifier"]
    req = case["request"]
    now = cfg["now"]
    v = Verifier([issuer], cfg["audience"], lambda now=now: now, node_keys=nodes, leeway=cfg["leeway"], hop=cfg["hop"],
                 fence=False)
    token = unhexlify(case["token"])
    result = "ok"
    for _ in range(case["presentations"]):
        try:
            v.verify(token, req["resource"], req["operation"], req["facts"])
            result = "ok"
        except Refused as e:
            result = e.code
    print("@@R", i, result)
print("@@DONE")
