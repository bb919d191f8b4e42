# On the MicroPython unix port with a bounded heap (-X heapsize): ucrumb.verify
# (compiled by mpy-cross, as on a board) on the tokens in the file named by the
# argument: a line of node keys (hex), then one line a token,
# "HEX,RESOURCE,OPERATION,HOP,EXPECT" (HOP "-": none); the shared vectors' keys
# and time. (A file: the 1.25 unix port dies on an argument of 200+ bytes.) Prints "@@V <expect> <result>" per token, then
# "@@DONE"; a MemoryError ends the run without it.
import sys
from binascii import unhexlify

from ucrumb.verify import Refused, Verifier

ISSUER = unhexlify(b"8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c")
with open(sys.argv[1]) as f:
    lines = f.read().split()
NODES = [unhexlify(lines[0][i:i + 64]) for i in range(0, len(lines[0]), 64)]
for j in range(1, len(lines)):
    tok, res, op, hop, expect = lines[j].split(",")
    lines[j] = None
    v = Verifier([ISSUER], None, lambda: 1800000000, node_keys=NODES, leeway=30, hop=None if hop == "-" else hop,
                 fence=False)
    try:
        v.verify(unhexlify(tok), res, op)
        got = "ok"
    except Refused as e:
        got = e.code
    tok = v = None
    print("@@V", expect, got)
print("@@DONE")
