# The crumb example application: read a value, send it to a service with a
# token scoped to exactly that call, again every few seconds.
#
# Files on the board (next to this one):
#   crumb.json   the device credentials: `crumb device add ID --out crumb.json`
#   config.json  {"wifi": {...}, "service": "http://host:port", "resource":
#                 "/sensors/temp01", "operation": "publish", "every": 30,
#                 "cadata": the issuer's CA certificate as PEM text, for https}
import json
import time

from ucrumb.client import ClockUnsynced, Denied, IssuerUnavailable, from_file
from ucrumb.http import HTTPError


def read_value():
    # A reading from the chip's own temperature sensor, where it has one.
    try:
        import esp32

        return esp32.mcu_temperature()  # ESP32-S2/S3/C3 (degrees C)
    except (ImportError, AttributeError):
        pass
    try:
        from machine import ADC

        volts = ADC(4).read_u16() * 3.3 / 65535  # RP2040/RP2350: internal sensor on ADC 4
        return 27 - (volts - 0.706) / 0.001721
    except (ImportError, ValueError, OSError):
        return 0.0  # no sensor on this port: send a constant


def run(rounds=None, config="config.json", credentials="crumb.json"):
    with open(config) as f:
        cfg = json.load(f)
    crumb = from_file(credentials, cadata=cfg.get("cadata"))  # cadata: the issuer's CA for https
    url = cfg["service"] + cfg["resource"]
    n = 0
    while rounds is None or n < rounds:
        n += 1
        value = "%.1f" % read_value()
        try:
            status, headers, body = crumb.request("POST", url, cfg["resource"], cfg.get("operation", "publish"),
                                                  body=value, headers={"Content-Type": "text/plain"})
            print("sent", value, "->", status)
        except IssuerUnavailable as e:  # no token now; cached ones are used while they last
            print("no token:", e, "(next try in", crumb.retry_in(), "ms)")
        except Denied as e:  # the policy says no: retrying will not help
            print("denied:", e.code, e)
        except ClockUnsynced as e:
            print("clock:", e)
        except HTTPError as e:  # the service itself could not be reached
            print("service unreachable:", e)
        if rounds is None or n < rounds:
            time.sleep(cfg.get("every", 30))


if __name__ == "__main__":
    run()
