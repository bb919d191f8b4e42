# Freeze the crumb device client (package ucrumb) and the example application
# (crumb_app, hal) into a MicroPython firmware: the same set a bundle from
# `crumb firmware build` carries in lib/, compiled by the firmware's own
# mpy-cross, so the bytecode always matches the firmware. boot.py and main.py
# stay files on the board's filesystem (MicroPython runs those at power-on).
#
# From your board's manifest (a FROZEN_MANIFEST of your own):
#
#     include("$(PORT_DIR)/boards/manifest.py")          # the port's usual modules
#     include("/path/to/crumb/firmware/manifest.py")     # + ucrumb, crumb_app, hal
#
# Frozen, ucrumb comes whole, its optional modules (ucrumb.verify, ed25519,
# sha512: the "verify" board feature of a bundle) included: frozen bytecode
# stays in flash, and they are imported only by code that verifies tokens.
#
# Paths in a manifest are relative to the manifest's own directory. docs/firmware.md
# has the build commands for the ESP32 and RP2 ports.
metadata(description="crumb device client and example application")  # version: ucrumb.__version__
package("ucrumb", base_path="../device")
module("crumb_app.py")
module("hal.py")
