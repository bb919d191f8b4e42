# Runs after boot.py at power-on: the crumb example application (crumb_app.py,
# shipped compiled as lib/crumb_app.mpy by `crumb firmware build`, or frozen
# into the firmware with manifest.py). Replace this file to run your own.
import crumb_app

crumb_app.run()
