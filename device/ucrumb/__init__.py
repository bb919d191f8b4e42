# ucrumb: the crumb device client (MicroPython >= 1.22 and CPython >= 3.10).
__version__ = "0.1.0"
