"""The shims: each device its own clock, watchdog and Wi-Fi; nothing a board would not have."""

from __future__ import annotations

import threading

import pytest

from crumb.tooling.sim import shims

# What MicroPython 1.26 documents (docs/library/machine.rst, machine.WDT.rst, network.rst,
# network.WLAN.rst, time.rst): a shim may offer a subset, never more.
MACHINE = {"reset", "soft_reset", "reset_cause", "bootloader", "disable_irq", "enable_irq", "freq", "idle", "sleep",
           "lightsleep", "deepsleep", "wake_reason", "unique_id", "time_pulse_us", "bitstream", "rng", "WDT", "Pin",
           "ADC", "RTC", "Timer", "UART", "SPI", "I2C", "PWM", "Signal", "mem8", "mem16", "mem32"}
WLAN = {"active", "connect", "disconnect", "scan", "status", "isconnected", "ifconfig", "ipconfig", "config",
        "IF_STA", "IF_AP", "PM_NONE", "PM_PERFORMANCE", "PM_POWERSAVE"}
NETWORK = {"WLAN", "LAN", "PPP", "STA_IF", "AP_IF", "STAT_IDLE", "STAT_CONNECTING", "STAT_WRONG_PASSWORD",
           "STAT_NO_AP_FOUND", "STAT_CONNECT_FAIL", "STAT_GOT_IP", "country", "hostname", "ipconfig"}
TIME = {"ticks_ms", "ticks_us", "ticks_cpu", "ticks_add", "ticks_diff", "sleep_ms", "sleep_us"}


def public(obj) -> set[str]:
    return {n for n in vars(obj) if not n.startswith("_")}


def test_shims_offer_only_what_micropython_offers():
    assert public(shims._machine()) <= MACHINE
    net = shims._network()
    assert public(net) <= NETWORK
    assert public(net.WLAN) <= WLAN
    installed = {"ticks_ms", "ticks_us", "ticks_cpu", "ticks_add", "ticks_diff", "sleep_ms", "sleep_us"}
    assert installed <= TIME


def in_thread(ctx, fn):
    """fn() on a thread bound to device ctx, as a device's code runs; its result or its exception."""
    out: list = []

    def run():
        shims.bind(ctx)
        try:
            out.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out.append((False, e))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value


class Clock:
    """A hand-moved real-time clock, so nothing here depends on the machine's speed."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_each_device_counts_ticks_from_its_own_boot_at_its_own_rate():
    clock = Clock()
    a = shims.DeviceContext("a", b"a", skew_ppm=0, clock=clock)
    clock.t += 0.2
    b = shims.DeviceContext("b", b"b", skew_ppm=0, clock=clock)
    fast = shims.DeviceContext("f", b"f", skew_ppm=100, clock=clock)
    clock.t += 10.0
    assert in_thread(a, shims.ticks_ms) == 10_200  # booted 0.2 s before b
    assert in_thread(b, shims.ticks_ms) == 10_000
    assert in_thread(fast, shims.ticks_ms) == 10_001  # 100 ppm fast: 1 ms in 10 s
    assert shims.ticks_ms() >= 0  # a thread that is no device: the process's own ticks


def test_a_clock_jump_and_the_wraparound():
    d = shims.DeviceContext("d", b"d", clock=Clock())
    before = in_thread(d, shims.ticks_ms)
    d.jump_ms += 600_000
    after = in_thread(d, shims.ticks_ms)
    assert shims.ticks_diff(after, before) >= 600_000
    assert shims.ticks_add(shims.TICKS_MASK, 1) == 0
    assert shims.ticks_diff(0, shims.TICKS_MASK) == 1


def test_wlan_is_one_interface_per_device_and_follows_its_link():
    up = {"v": False}
    d = shims.DeviceContext("d", b"\x01\x02\x03\x04\x05\x06", link_up=lambda: up["v"])
    net = shims._network()

    def scenario():
        w1 = net.WLAN(net.STA_IF)
        w1.active(True)
        w1.connect("ssid", "pw")
        w2 = net.WLAN(net.STA_IF)  # another object, the same interface
        seen = [w2.active(), w2.isconnected(), w2.status()]
        up["v"] = True
        seen += [w2.isconnected(), w2.status(), w2.ifconfig()[0], w2.config("mac")]
        return seen

    assert in_thread(d, scenario) == [True, False, net.STAT_CONNECTING, True, net.STAT_GOT_IP, "127.0.0.1",
                                      b"\x01\x02\x03\x04\x05\x06"]


def test_watchdog_power_off_and_reset_reach_the_device():
    m = shims._machine()
    d = shims.DeviceContext("d", b"uid123")

    def start():
        wdt = m.WDT(timeout=2000)
        return wdt, m.unique_id()

    _wdt, uid = in_thread(d, start)
    assert uid == b"uid123" and d.wdt_timeout == pytest.approx(2.0)
    d.reset_pending = "watchdog"
    with pytest.raises(shims.Reset):
        in_thread(d, lambda: shims.sleep_ms(10))
    d.reset_pending = None
    d.stop.set()
    with pytest.raises(shims.PowerOff):
        in_thread(d, lambda: shims.sleep_ms(10_000))


def test_boot_starts_the_ticks_again_and_forgets_the_watchdog_and_wifi():
    clock = Clock()
    d = shims.DeviceContext("d", b"d", clock=clock)
    clock.t += 5
    d.jump_ms, d.wdt_timeout, d.wifi_active, d.reset_pending = 99, 8.0, True, "watchdog"
    d.boot()
    assert in_thread(d, shims.ticks_ms) == 0
    assert (d.jump_ms, d.wdt_timeout, d.wifi_active, d.reset_pending) == (0, None, False, None)
