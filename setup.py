"""Only for the optional C extension; everything else is in pyproject.toml.

crumb._commit lets the issuer sign and hash-chain a batch with the GIL
released (host/crumb/_commit.c). It is optional: without a C compiler the
package installs without it, and the issuer signs on its event loop instead
(slower, same tokens). `crumb issuer serve` says which path it runs.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("crumb._commit", ["host/crumb/_commit.c"], optional=True,
                             extra_compile_args=["-O2"])])
