# Ed25519 (RFC 8032 §7.1) and SHA-512 (FIPS 180-4) on the device, against the
# published vectors, on CPython and in MicroPython. The SHA-512 cases call
# ucrumb.sha512 itself (ucrumb.ed25519 uses hashlib's where the port has one:
# on CPython; in the VM it uses ucrumb.sha512).
from binascii import unhexlify as u

from ucrumb import ed25519
from ucrumb.sha512 import sha512

# RFC 8032 §7.1, TEST 1, 2, 3 and SHA(abc): (secret, public, message, signature)
RFC8032 = (
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     ("ddaf35a193617abacc417349ae204131"
      "12e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd"
      "454d4423643ce80e2a9ac94fa54ca49f"),
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
)

# FIPS 180-4 examples (NIST CSRC "SHA_All" example values): message -> SHA-512
SHA512 = (
    (b"", ("cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
           "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e")),
    (b"abc", ("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
              "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")),
    (b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     ("204a8fc6dda82f0a0ced7beb8e08a41657c16ef468b228a8279be331a703c335"
      "96fd15c13b1b07f9aa1d3bea57789ca031ad85c7a71dd70354ec631238ca3445")),
    (b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
     ("8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
      "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909")),
)


def test_sha512_fips_vectors():
    for msg, want in SHA512:
        assert sha512(msg) == u(want), msg


def test_sha512_padding_boundaries():
    # 111/112 bytes: the length field fits / does not fit the last block
    seen = set()
    for n in (111, 112, 127, 128, 129, 239, 240):
        d = sha512(b"a" * n)
        assert len(d) == 64 and d not in seen
        seen.add(d)


def test_rfc8032_vectors():
    for sk, pk, msg, sig in RFC8032:
        assert ed25519.public_key(u(sk)) == u(pk)
        assert ed25519.verify(u(pk), u(msg), u(sig))


def test_rfc8032_mutations_refused():
    _sk, pk, msg, sig = RFC8032[2]
    pk, msg, sig = u(pk), u(msg), u(sig)
    for i in (0, 31, 32, 63):
        bad = bytearray(sig)
        bad[i] ^= 1
        assert not ed25519.verify(pk, msg, bytes(bad)), i
    assert not ed25519.verify(pk, msg + b"\x00", sig)
    assert not ed25519.verify(u(RFC8032[0][1]), msg, sig)
    assert not ed25519.verify(pk[:31], msg, sig)
    assert not ed25519.verify(pk, msg, sig[:63])


def test_non_canonical_s_refused():
    # S + L: the same point equation, refused as libsodium refuses it
    _sk, pk, msg, sig = RFC8032[0]
    sig = u(sig)
    s = int.from_bytes(sig[32:], "little") + ed25519.L
    assert s < 1 << 256
    assert not ed25519.verify(u(pk), u(msg), sig[:32] + s.to_bytes(32, "little"))


def test_small_order_keys_refused():
    _sk, pk, msg, sig = RFC8032[0]
    for y in ed25519._SMALL:
        for sign in (0, 1 << 255):
            enc = (y | sign).to_bytes(32, "little")
            assert not ed25519.verify(enc, u(msg), u(sig))
            assert not ed25519.verify(u(pk), u(msg), enc + u(sig)[32:])
