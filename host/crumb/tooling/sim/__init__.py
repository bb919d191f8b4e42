"""`crumb sim`: a fleet of simulated devices running the real device code.

Each device runs ``ucrumb`` and the firmware's application
(``firmware/crumb_app.py`` + ``firmware/hal.py``) unmodified on CPython, one
thread per device, with shims for what CPython lacks (``shims``): its own
``time.ticks_*`` clock (boot time, skew, jumps; no RTC), ``machine``
(unique_id, WDT) and ``network`` (WLAN). Its hardware is Adafruit Blinka's
OS-agnostic board. The devices talk to a real issuer and real verifying
services (``stack``) through a loopback TCP proxy (``proxy``) that injects the
scenario's faults and on which the attacker (``attacker``) captures and
replays what it sees. Everything that happens is an event (``events``); the
summary, the charts and the report are computed from those events only
(``metrics``, ``charts``, ``report``).

Modules: ``scenario`` (the TOML file, checked with line numbers), ``plan``
(everything the seed decides), ``shims``, ``fleet`` (devices and the
operator console), ``proxy``, ``attacker``, ``stack``, ``mqttsink`` (the MQTT
consumer process), ``events``, ``metrics``, ``charts``, ``report``,
``progress``, ``runner``, ``cli``, ``locust`` (the same workload as a Locust
``User``). docs/simulator.md is the guide.
"""
