# ucrumb.mac: HMAC-SHA256 (RFC 4231 vectors) and constant-time compare.
from cases import h
from ucrumb.mac import hmac_sha256

_LONG_KEY = b"\xaa" * 131

# RFC 4231 section 4, HMAC-SHA-256 (test case 5 is truncated to 128 bits).
RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (
        _LONG_KEY,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        _LONG_KEY,
        (b"This is a test using a larger than block-size key and a larger than block-size data."
        b" The key needs to be hashed before being used by the HMAC algorithm."),
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


def test_hmac_sha256_rfc4231():
    for i, (key, msg, want) in enumerate(RFC4231):
        want = h(want)
        got = hmac_sha256(key, msg)
        assert len(got) == 32
        assert got[: len(want)] == want, ("RFC 4231 test case", i + 1)


def test_hmac_sha256_key_lengths_around_block_size():
    # expected values from CPython's hmac module
    for key, want in (
        (b"", "cc4cb73d7bea4168252428c3ddffec5c6c8c8b0511a5ae6e4a9b1e8fe2eb2ea9"),
        (bytes(range(63)), "5fda40dc1f9179019b9b1d679a6ee3e8416fde0907c348785d4031b242d0cc38"),
        (b"\x11" * 64, "73ccd7c0a73c3b69a7e5c8cfebdf70c5c522156a11d1f8897caf6e76b64192a1"),
        (b"\x22" * 65, "daae9e2be4115cf53823741a8a1e96e3fe9637c8d07f3c0386283c445afc6d91"),
    ):
        assert hmac_sha256(key, b"crumb") == h(want), len(key)


def test_hmac_accepts_bytes_like():
    key, msg, want = RFC4231[1]
    want = h(want)
    assert hmac_sha256(bytearray(key), bytearray(msg)) == want
    assert hmac_sha256(memoryview(key), memoryview(b"xx" + msg)[2:]) == want
    assert type(hmac_sha256(key, msg)) is bytes


def test_hmac_does_not_modify_key():
    key = bytearray(b"k" * 10)
    hmac_sha256(key, b"m")
    assert key == bytearray(b"k" * 10)
