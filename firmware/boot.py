# Runs first at power-on: join the Wi-Fi network named in config.json
# ({"wifi": {"ssid": ..., "password": ...}, ...}), giving up after 20 s so a
# missing network never blocks the board (main.py reports it and retries).
# `crumb sim` calls wifi() for each simulated device with its own config file.
import json
import time

import network


def wifi(timeout_ms=20000, config="config.json"):
    try:
        with open(config) as f:
            cfg = json.load(f)["wifi"]
    except (OSError, ValueError, KeyError) as e:
        print("boot: no Wi-Fi settings in config.json:", e)
        return None
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(cfg["ssid"], cfg["password"])
        t0 = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                print("boot: Wi-Fi", cfg["ssid"], "did not connect within", timeout_ms // 1000, "s")
                return wlan
            time.sleep_ms(200)
    print("boot: Wi-Fi up,", wlan.ifconfig()[0])
    return wlan


if __name__ == "__main__":  # at power-on (MicroPython runs boot.py as __main__)
    wifi()
