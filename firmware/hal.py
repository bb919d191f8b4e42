# The hardware the example application touches, behind one small interface,
# so that the same main.py runs on a board, on a Linux single-board computer
# and in crumb's simulator:
#
#   MicroPython (a board)    machine.ADC / machine.Pin, the chip's own
#                            temperature sensor when no pin is configured
#   CPython (an SBC)         Adafruit Blinka: board, digitalio, analogio
#   CPython (the simulator)  Blinka on its OS-agnostic board
#                            (BLINKA_FORCEBOARD=OS_AGNOSTIC_BOARD
#                            BLINKA_FORCECHIP=OS_AGNOSTIC): the pins
#                            Ax_INPUT_WAVE_SINE, Dx_INPUT_TOGGLE, Dx_OUTPUT
#
# The board services come from `machine` wherever it exists (a board, or the
# simulator's shim): unique_id() and the watchdog (machine.WDT). A port
# without them gets None and a watchdog that does nothing.
#
# Settings (config.json, "hal"): {"sensor": {"pin": ..., "scale": 1.0,
# "offset": 0.0}, "contact": {"pin": ...}, "actuator": {"pin": ...}}. A pin
# is a number on MicroPython (machine.Pin/ADC id) and a name of Blinka's
# `board` on CPython ("D17", "Ax_INPUT_WAVE_SINE"). The sensor's reading is
# offset + scale * raw (raw: read_u16() on a board, AnalogIn.value on
# Blinka), a linear sensor such as a TMP36 behind an ADC.
import sys

MICROPYTHON = sys.implementation.name == "micropython"

try:
    import machine
except ImportError:  # CPython on a single-board computer: no board services
    machine = None


def unique_id():
    """The chip's unique id as hex text, or None where the port has none."""
    f = getattr(machine, "unique_id", None)
    if f is None:
        return None
    return "".join("%02x" % b for b in f())


class Watchdog:
    """machine.WDT where the port has one; feed() does nothing elsewhere.

    Once started a watchdog cannot be stopped: if feed() is not called
    within ``timeout_ms`` the chip resets. rp2040 caps it at 8388 ms."""

    def __init__(self, timeout_ms):
        wdt = getattr(machine, "WDT", None)
        self.wdt = wdt(timeout=timeout_ms) if wdt is not None and timeout_ms else None

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()


def _blinka_pin(name):
    import board

    pin = getattr(board, name, None)
    if pin is None:
        raise ValueError("board has no pin %s" % name)
    return pin


class Sensor:
    """A temperature in degrees C: read() -> float, or None without a sensor."""

    def __init__(self, cfg):
        cfg = cfg or {}
        self.scale = cfg.get("scale", 1.0)
        self.offset = cfg.get("offset", 0.0)
        pin = cfg.get("pin")
        self.adc = None
        self.internal = None
        if pin is None:
            self.internal = _internal_sensor()
        elif MICROPYTHON:
            self.adc = machine.ADC(pin)
        else:
            import analogio

            self.adc = analogio.AnalogIn(_blinka_pin(pin))

    def read(self):
        if self.internal is not None:
            return self.internal()
        if self.adc is None:
            return None
        raw = self.adc.read_u16() if MICROPYTHON else self.adc.value
        return self.offset + self.scale * raw


def _internal_sensor():
    # The chip's own temperature sensor: ESP32-S2/S3/C3, then RP2040/RP2350
    # (ADC 4); None elsewhere.
    try:
        import esp32

        if hasattr(esp32, "mcu_temperature"):
            return esp32.mcu_temperature
    except ImportError:
        pass
    try:
        adc = machine.ADC(4)

        def rp2():
            volts = adc.read_u16() * 3.3 / 65535
            return 27 - (volts - 0.706) / 0.001721

        if sys.platform == "rp2":
            return rp2
    except (AttributeError, ValueError, OSError, TypeError):
        pass
    return None


class Contact:
    """A digital input (a door contact, a switch): read() -> bool, or None if not configured."""

    def __init__(self, cfg):
        pin = (cfg or {}).get("pin")
        self.pin = None
        if pin is None:
            return
        if MICROPYTHON:
            self.pin = machine.Pin(pin, machine.Pin.IN)
        else:
            import digitalio

            self.pin = digitalio.DigitalInOut(_blinka_pin(pin))
            self.pin.direction = digitalio.Direction.INPUT

    def read(self):
        if self.pin is None:
            return None
        return bool(self.pin.value() if MICROPYTHON else self.pin.value)


class Actuator:
    """A digital output (a valve's relay): set(bool); ``state`` is what was last set.

    The state is remembered here rather than read back: an output pin's
    read-back is not the load's state on every port (Blinka's OS-agnostic
    Dx_OUTPUT always reads True)."""

    def __init__(self, cfg):
        pin = (cfg or {}).get("pin")
        self.pin = None
        self.state = False
        if pin is None:
            return
        if MICROPYTHON:
            self.pin = machine.Pin(pin, machine.Pin.OUT, value=0)
        else:
            import digitalio

            self.pin = digitalio.DigitalInOut(_blinka_pin(pin))
            self.pin.switch_to_output(value=False)

    def set(self, on):
        on = bool(on)
        if self.pin is not None:
            if MICROPYTHON:
                self.pin.value(1 if on else 0)
            else:
                self.pin.value = on
        self.state = on
