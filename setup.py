"""Only for the optional C extensions; everything else is in pyproject.toml.

crumb._commit lets the issuer sign and hash-chain a batch with the GIL
released (host/crumb/_commit.c); crumb._request parses and MACs the common
device request and writes its token, audit record and answer bytes
(host/crumb/_request.c). Both are optional: without a C
compiler the package installs without them, and the issuer does the same
work in Python (slower, same tokens). `crumb issuer serve` says which paths
it runs.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(name, [source], optional=True, extra_compile_args=["-O2"])
                   for name, source in (("crumb._commit", "host/crumb/_commit.c"),
                                        ("crumb._request", "host/crumb/_request.c"))])
