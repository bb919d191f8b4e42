# Freeze the crumb device client (package ucrumb) into a MicroPython firmware.
#
# From your board's manifest (ports/<port>/boards/<BOARD>/manifest.py, or a
# FROZEN_MANIFEST of your own):
#
#     include("$(PORT_DIR)/boards/manifest.py")          # the port's usual modules
#     include("/path/to/crumb/firmware/manifest.py")     # + ucrumb
#
# Paths in a manifest are relative to the manifest's own directory. The
# firmware's own mpy-cross compiles the package, so the bytecode always
# matches the firmware. See docs/device.md.
metadata(description="crumb device client: request-time authorization tokens")  # version: ucrumb.__version__
package("ucrumb", base_path="../device")
