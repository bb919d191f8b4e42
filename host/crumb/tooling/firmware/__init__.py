"""Building the device client for boards: what the firmware's .mpy loader accepts (mpycompat)."""
