"""What MicroPython has and CPython lacks, one device at a time.

The device code (ucrumb, firmware/crumb_app.py, firmware/hal.py, firmware/boot.py)
runs unmodified, one thread per device. It calls ``time.ticks_ms()``,
``machine.unique_id()``, ``network.WLAN(...)``, ``time.sleep_ms()``; these
shims answer for the device whose thread is calling:

* ``time.ticks_ms``, ``ticks_us``, ``ticks_cpu``, ``ticks_add``,
  ``ticks_diff``, ``sleep_ms``, ``sleep_us``, added to CPython's ``time``:
  each device counts from its own boot, at its own rate (its clock skew), and
  may jump (a fault). Like a board without an RTC, nothing gives it the wall
  clock; ``time.time()`` is left alone and the device code never reads it.
  Ticks wrap at 2**30 as on MicroPython's 32-bit ports.
* ``machine``: ``unique_id()``, ``WDT(id=0, timeout=5000)`` with ``feed()``,
  and ``reset()``. Nothing else: the pins are Blinka's (hal.py).
* ``network``: ``WLAN(interface_id)`` with ``active``, ``connect``,
  ``disconnect``, ``isconnected``, ``status``, ``ifconfig``, ``config``; the
  module constants ``STA_IF``/``AP_IF`` and ``STAT_*`` (the values of the rp2
  port's cyw43 driver) and the class constants ``IF_STA``/``IF_AP``. The link
  is up when the device asked to connect and the simulator has its Wi-Fi up
  (offline-at-boot devices come up later).

Each shim offers only what MicroPython's module of that name offers
(docs/library/machine.rst, network.WLAN.rst and time.rst of MicroPython
1.26), so code that runs here does not rely on something a board lacks.

The simulator ends a device by raising ``PowerOff`` (power removed) or
``Reset`` (the watchdog, ``machine.reset()``, a reboot burst) from its next
``sleep_ms``/``feed()``: both derive from BaseException, so the
application's ``except Exception`` cannot swallow them, as nothing on a
board survives a power cut.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable

TICKS_PERIOD = 1 << 30
TICKS_MASK = TICKS_PERIOD - 1
_HALF = TICKS_PERIOD // 2


class PowerOff(BaseException):
    """The device's power is removed: its thread ends."""


class Reset(BaseException):
    """The device resets (watchdog, machine.reset(), a reboot burst): it boots again."""


class DeviceContext:
    """One device's clock, watchdog, link and serial console, as its shims see them."""

    def __init__(self, device_id: str, uid: bytes, skew_ppm: float = 0.0,
                 link_up: Callable[[], bool] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.id = device_id
        self.uid = uid
        self.rate = 1.0 + skew_ppm / 1e6
        self.clock = clock  # the real time the device's ticks are derived from
        self.boot_mono = clock()
        self.jump_ms = 0
        self.stop = threading.Event()       # set: power off
        self.reset_pending: str | None = None  # why the next shim call resets the device
        self.link_up = link_up or (lambda: True)
        self.wifi_active = False
        self.wifi_wanted = False
        self.wdt_timeout: float | None = None  # seconds, once a WDT is started
        self.wdt_fed = 0.0                   # monotonic time of the last feed
        self.serial: list[str] = []          # what the device printed (its serial console)

    def boot(self) -> None:
        """Power-on: ticks start from 0, the watchdog is off, the Wi-Fi forgotten."""
        self.boot_mono = self.clock()
        self.jump_ms = 0
        self.reset_pending = None
        self.wdt_timeout = None
        self.wifi_active = False
        self.wifi_wanted = False

    def ticks_ms(self) -> int:
        return (int((self.clock() - self.boot_mono) * 1000 * self.rate) + self.jump_ms) & TICKS_MASK

    def ticks_us(self) -> int:
        return (int((self.clock() - self.boot_mono) * 1e6 * self.rate) + self.jump_ms * 1000) & TICKS_MASK

    def sleep(self, seconds: float) -> None:
        self.checkpoint()
        if self.stop.wait(max(0.0, seconds) / self.rate):
            raise PowerOff()
        self.checkpoint()

    def checkpoint(self) -> None:
        if self.stop.is_set():
            raise PowerOff()
        if self.reset_pending:
            raise Reset(self.reset_pending)


_local = threading.local()


def bind(ctx: DeviceContext | None) -> None:
    """Make ``ctx`` the device of the calling thread."""
    _local.device = ctx


def current() -> DeviceContext | None:
    return getattr(_local, "device", None)


# -- time -----------------------------------------------------------------------------

_t0 = time.monotonic()


def ticks_ms() -> int:
    d = getattr(_local, "device", None)
    if d is not None:
        return d.ticks_ms()
    return int((time.monotonic() - _t0) * 1000) & TICKS_MASK


def ticks_us() -> int:
    d = getattr(_local, "device", None)
    if d is not None:
        return d.ticks_us()
    return int((time.monotonic() - _t0) * 1e6) & TICKS_MASK


def ticks_add(ticks: int, delta: int) -> int:
    return (ticks + delta) & TICKS_MASK


def ticks_diff(a: int, b: int) -> int:
    return ((a - b + _HALF) & TICKS_MASK) - _HALF


def sleep_ms(ms: int) -> None:
    d = getattr(_local, "device", None)
    if d is None:
        time.sleep(ms / 1000)
    else:
        d.sleep(ms / 1000)


def sleep_us(us: int) -> None:
    d = getattr(_local, "device", None)
    if d is None:
        time.sleep(us / 1e6)
    else:
        d.sleep(us / 1e6)


# -- machine ---------------------------------------------------------------------------

def _machine() -> types.ModuleType:
    m = types.ModuleType("machine", "crumb sim shim of MicroPython's machine: unique_id, WDT, reset")

    def unique_id() -> bytes:
        d = current()
        return d.uid if d is not None else b"\x00" * 6

    class WDT:
        """machine.WDT(id=0, timeout=5000): started at once, cannot be stopped; feed() it."""

        def __init__(self, id: int = 0, timeout: int = 5000) -> None:
            d = current()
            self._d = d
            if d is not None:
                d.wdt_timeout = timeout / 1000 / d.rate
                d.wdt_fed = time.monotonic()

        def feed(self) -> None:
            d = self._d
            if d is not None:
                d.checkpoint()
                d.wdt_fed = time.monotonic()

    def reset() -> None:
        d = current()
        raise Reset("machine.reset()") if d is not None else SystemExit("machine.reset()")

    m.unique_id = unique_id
    m.WDT = WDT
    m.reset = reset
    return m


# -- network ---------------------------------------------------------------------------

STA_IF, AP_IF = 0, 1
# rp2 (cyw43): extmod/network_cyw43.c
STAT_IDLE, STAT_CONNECTING, STAT_WRONG_PASSWORD, STAT_NO_AP_FOUND, STAT_CONNECT_FAIL, STAT_GOT_IP = 0, 1, -3, -2, -1, 3


def _network() -> types.ModuleType:
    m = types.ModuleType("network", "crumb sim shim of MicroPython's network: WLAN")

    class WLAN:
        IF_STA = STA_IF
        IF_AP = AP_IF

        # As on a board, every WLAN(STA_IF) is the same interface: its state is the device's.
        def __init__(self, interface_id: int = STA_IF) -> None:
            self._if = interface_id
            self._d = current()

        @property
        def _active(self) -> bool:
            d = self._d
            return d is not None and d.wifi_active

        def active(self, is_active: bool | None = None) -> bool | None:
            if is_active is None:
                return self._active
            if self._d is not None:
                self._d.wifi_active = bool(is_active)
            return None

        def connect(self, ssid: str | None = None, key: str | None = None, *, bssid: bytes | None = None) -> None:
            if self._if != STA_IF:
                raise OSError("only the STA interface connects")
            if not self._active:
                raise OSError("Wifi Not Started")
            if self._d is not None:
                self._d.wifi_wanted = True

        def disconnect(self) -> None:
            if self._d is not None:
                self._d.wifi_wanted = False

        def isconnected(self) -> bool:
            d = self._d
            return bool(self._active and d is not None and d.wifi_wanted and d.link_up())

        def status(self, param: str | None = None):
            if param == "rssi":
                return -60
            if param is not None:
                raise ValueError("unknown status param")
            if self.isconnected():
                return STAT_GOT_IP
            d = self._d
            return STAT_CONNECTING if self._active and d is not None and d.wifi_wanted else STAT_IDLE

        def ifconfig(self, config: tuple | None = None):
            if config is not None:
                return None
            if not self.isconnected():
                return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

        def config(self, *args: str, **kwargs):
            if kwargs:
                return None
            if args == ("mac",):
                d = self._d
                return d.uid if d is not None else b"\x00" * 6
            raise ValueError("unknown config param")

    m.WLAN = WLAN
    for name in ("STA_IF", "AP_IF", "STAT_IDLE", "STAT_CONNECTING", "STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND",
                 "STAT_CONNECT_FAIL", "STAT_GOT_IP"):
        setattr(m, name, globals()[name])
    return m


# -- the serial consoles -----------------------------------------------------------------

class SerialRouter:
    """sys.stdout while devices run: a device's prints go to its own serial console
    (kept, and written to the report), everything else to the real stdout."""

    def __init__(self, real) -> None:
        self.real = real

    def write(self, s: str) -> int:
        d = current()
        if d is None:
            return self.real.write(s)
        if len(d.serial) < 2000:  # a chatty device must not eat the memory
            d.serial.append(s)
        return len(s)

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def install() -> None:
    """Put the shims in place, before any device code is imported."""
    if "ucrumb.http" in sys.modules and sys.modules["ucrumb.http"].ticks_ms is not ticks_ms:
        raise RuntimeError("install the shims before importing ucrumb: it binds time.ticks_ms at import")
    for name, fn in (("ticks_ms", ticks_ms), ("ticks_us", ticks_us), ("ticks_cpu", ticks_us),
                     ("ticks_add", ticks_add), ("ticks_diff", ticks_diff), ("sleep_ms", sleep_ms),
                     ("sleep_us", sleep_us)):
        setattr(time, name, fn)
    sys.modules.setdefault("machine", _machine())
    sys.modules.setdefault("network", _network())
