"""Tooling: the benchmarks behind ``crumb bench``, the fleet simulator behind
``crumb sim`` (``sim/``), the walkthrough behind ``crumb demo``, private local
services (redis-server, mosquitto, uvicorn) and a local issuer for tests and
benches, and a CPython client of the token endpoint. Nothing in the token
core, the services or the issuer imports it.
"""
