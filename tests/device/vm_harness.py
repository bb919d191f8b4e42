# Runs device test cases inside the MicroPython VM (tools/mpy/run.mjs).
# argv: module names under the `cases` package (or "pkg.mod=ARG": a module
# whose setup(ARG) runs first, e.g. the base URL of test servers). For every
# `test_*` function
# (sorted by name, as the pytest side enumerates them) it prints
#   @@CASE <module>.<name> OK|FAIL
# then, for a failure, the traceback, then  @@END
# and finally  @@DONE  so the caller can tell a crash from a finished run.
import io
import sys

for mod in sys.argv[1:]:
    # "mod" is cases.mod; "pkg.mod=ARG" imports pkg.mod and calls its setup(ARG) first
    mod, _, arg = mod.partition("=")
    m = __import__(mod if "." in mod else "cases." + mod, None, None, ["*"])
    if arg:
        m.setup(arg)
    names = sorted(n for n in dir(m) if n.startswith("test_"))
    for n in names:
        f = getattr(m, n)
        try:
            f()
        except Exception as e:
            buf = io.StringIO()
            sys.print_exception(e, buf)
            print("@@CASE %s.%s FAIL" % (mod, n))
            print(buf.getvalue().rstrip())
        else:
            print("@@CASE %s.%s OK" % (mod, n))
        print("@@END")
print("@@DONE")
