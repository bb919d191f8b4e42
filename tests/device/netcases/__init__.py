# Device test cases that need servers on loopback: the pytest side starts the
# servers and hands their address to setup(); the cases run on CPython and
# inside the MicroPython VM (tests/device/vm_harness.py).
