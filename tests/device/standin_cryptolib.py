"""A STAND-IN for MicroPython's ``cryptolib`` module, for tests on CPython only.

CPython has no ``cryptolib``; this module lets the tests run ucrumb.aesccm's
cryptolib (and, injected under that name, ucryptolib) path there. It offers
exactly what the real module offers in MicroPython 1.25.0 built as the unix
port (the build under tools/mpy/unix-port, whose behaviour
tests/device/test_device_aesccm.py also checks directly): the source is
extmod/modcryptolib.c of that release (the same in 1.20-1.27 for what is
mirrored here; ``ucryptolib`` is the same module under its pre-1.20 name).

* the module has ``aes`` and nothing else: the MODE_* constants exist only with
  MICROPY_PY_CRYPTOLIB_CONSTS, and CTR (mode 6) only with
  MICROPY_PY_CRYPTOLIB_CTR, neither set in that build;
* ``aes(key, mode[, IV])``: 2 or 3 positional arguments; mode checked first
  (``ValueError("mode")`` unless 1 = ECB or 2 = CBC), then the key (any buffer,
  16 or 32 bytes, else ``ValueError("key")``), then the IV (16 bytes when given
  and not None; required for CBC; else ``ValueError("IV")``);
* ``encrypt(in[, out])`` / ``decrypt(in[, out])``: input a multiple of 16 bytes
  (``ValueError("blksize % 16")``), ``out`` a writable buffer at least as long
  (``ValueError("output too small")``), returned when given, else new bytes;
  an object keeps the direction of its first call
  (``ValueError("can't encrypt & decrypt")``); CBC chains across calls.

The AES itself is the ``cryptography`` package's.
"""

# Imported under private names: the module's public names are the real one's (``aes``).
from typing import Any as _Any

from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers import algorithms as _algorithms
from cryptography.hazmat.primitives.ciphers import modes as _modes

_ECB, _CBC = 1, 2


def _buffer(obj: _Any) -> bytes:
    # mp_get_buffer_raise(..., MP_BUFFER_READ): str has the buffer protocol in MicroPython
    if isinstance(obj, str):
        return obj.encode()
    try:
        return bytes(memoryview(obj))
    except TypeError:
        raise TypeError("object with buffer protocol required") from None


class aes:  # the real type's name
    def __init__(self, *args: _Any) -> None:
        if len(args) < 2:
            raise TypeError(f"function missing {2 - len(args)} required positional arguments")
        if len(args) > 3:
            raise TypeError(f"function expected at most 3 arguments, got {len(args)}")
        if not isinstance(args[1], int):
            raise TypeError(f"can't convert {type(args[1]).__name__} to int")
        mode = args[1]
        if mode not in (_ECB, _CBC):
            raise ValueError("mode")
        key = _buffer(args[0])
        if len(key) not in (16, 32):
            raise ValueError("key")
        iv = None
        if len(args) > 2 and args[2] is not None:
            iv = _buffer(args[2])
            if len(iv) != 16:
                raise ValueError("IV")
        elif mode == _CBC:
            raise ValueError("IV")
        self._cipher = _Cipher(_algorithms.AES(key), _modes.ECB() if mode == _ECB else _modes.CBC(iv or b""))
        self._ctx: _Any = None
        self._encrypting: bool | None = None

    def _process(self, encrypt: bool, args: tuple) -> _Any:
        if len(args) < 1:
            raise TypeError("function missing 1 required positional arguments")
        if len(args) > 2:
            raise TypeError(f"function expected at most 3 arguments, got {len(args) + 1}")
        data = _buffer(args[0])
        if len(data) % 16:
            raise ValueError("blksize % 16")
        out = None
        if len(args) > 1:
            try:
                out = memoryview(args[1])
            except TypeError:
                raise TypeError("object with buffer protocol required") from None
            if out.readonly:
                raise TypeError("object with buffer protocol required")
            if out.nbytes < len(data):
                raise ValueError("output too small")
        if self._encrypting is None:
            self._encrypting = encrypt
            self._ctx = self._cipher.encryptor() if encrypt else self._cipher.decryptor()
        elif self._encrypting != encrypt:
            raise ValueError("can't encrypt & decrypt")
        result = self._ctx.update(data)
        if out is None:
            return result
        out.cast("B")[: len(result)] = result
        return args[1]

    def encrypt(self, *args: _Any) -> _Any:
        return self._process(True, args)

    def decrypt(self, *args: _Any) -> _Any:
        return self._process(False, args)
