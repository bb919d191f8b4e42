# ucrumb.aesccm: AES-CCM against published vectors, and what it refuses.
# Runs on CPython, in the WebAssembly VM (no cryptolib there: the pure-Python
# AES) and on the unix port (its real cryptolib), each with whatever backend
# the runtime has; tests/device/test_device_aesccm.py runs these cases with
# each backend forced on CPython.
from cases import h, raises
from ucrumb import aesccm
from ucrumb.aesccm import ccm_decrypt, ccm_encrypt

# RFC 3610 section 8, packet vectors: (number, nonce, header length, input
# packet, output after the header). Vectors 1-12 use key C0..CF, input
# packet 00 01 02 ..., nonce 00 00 00 (n+2) (n+1) n (n-1) A0..A5; 13-24 use
# the key below. Tag: 8 bytes for 1-6 and 13-18, 10 bytes for 7-12 and 19-24.
RFC3610_KEY2 = "D7828D13B2B0BDC325A76236DF93CC6B"
RFC3610_1_12 = (
    (1, 31, 8, "588C979A61C663D2F066D0C2C0F989806D5F6B61DAC38417E8D12CFDF926E0"),
    (2, 32, 8, "72C91A36E135F8CF291CA894085C87E3CC15C439C9E43A3BA091D56E10400916"),
    (3, 33, 8, "51B1E5F44A197D1DA46B0F8E2D282AE871E838BB64DA8596574ADAA76FBD9FB0C5"),
    (4, 31, 12, "A28C6865939A9A79FAAA5C4C2A9D4A91CDAC8C96C861B9C9E61EF1"),
    (5, 32, 12, "DCF1FB7B5D9E23FB9D4E131253658AD86EBDCA3E51E83F077D9C2D93"),
    (6, 33, 12, "6FC1B011F006568B5171A42D953D469B2570A4BD87405A0443AC91CB94"),
    (7, 31, 8, "0135D1B2C95F41D5D1D4FEC185D166B8094E999DFED96C048C56602C97ACBB7490"),
    (8, 32, 8, "7B75399AC0831DD2F0BBD75879A2FD8F6CAE6B6CD9B7DB24C17B4433F434963F34B4"),
    (9, 33, 8, "82531A60CC24945A4B8279181AB5C84DF21CE7F9B73F42E197EA9C07E56B5EB17E5F4E"),
    (10, 31, 12, "07342594157785152B074098330ABB141B947B566AA9406B4D999988DD"),
    (11, 32, 12, "676BB20380B0E301E8AB79590A396DA78B834934F53AA2E9107A8B6C022C"),
    (12, 33, 12, "C0FFA0D6F05BDB67F24D43A4338D2AA4BED7B20E43CD1AA31662E7AD65D6DB"),
)
RFC3610_13_24 = (
    (13, "00412B4EA9CDBE3C9696766CFA", 8,
     "0BE1A88BACE018B108E8CF97D820EA258460E96AD9CF5289054D895CEAC47C",
     "4CB97F86A2A4689A877947AB8091EF5386A6FFBDD080F8E78CF7CB0CDDD7B3"),
    (14, "0033568EF7B2633C9696766CFA", 8,
     "63018F76DC8A1BCB9020EA6F91BDD85AFA0039BA4BAFF9BFB79C7028949CD0EC",
     "4CCB1E7CA981BEFAA0726C55D378061298C85C92814ABC33C52EE81D7D77C08A"),
    (15, "00103FE41336713C9696766CFA", 8,
     "AA6CFA36CAE86B40B916E0EACC1C00D7DCEC68EC0B3BBB1A02DE8A2D1AA346132E",
     "B1D23A2220DDC0AC900D9AA03C61FCF4A559A4417767089708A776796EDB723506"),
    (16, "00764C63B8058E3C9696766CFA", 12,
     "D0D0735C531E1BECF049C24412DAAC5630EFA5396F770CE1A66B21F7B2101C",
     "14D253C3967B70609B7CBB7C499160283245269A6F49975BCADEAF"),
    (17, "00F8B678094E3B3C9696766CFA", 12,
     "77B60F011C03E1525899BCAEE88B6A46C78D63E52EB8C546EFB5DE6F75E9CC0D",
     "5545FF1A085EE2EFBF52B2E04BEE1E2336C73E3F762C0C7744FE7E3C"),
    (18, "00D560912D3F703C9696766CFA", 12,
     "CD9044D2B71FDB8120EA60C06435ACBAFB11A82E2F071D7CA4A5EBD93A803BA87F",
     "009769ECABDF48625594C59251E6035722675E04C847099E5AE0704551"),
    (20, "00920F40E56CDC3C9696766CFA", 8,
     "74A0EBC9069F5B371761433C37C5A35FC1F39F406302EB907C6163BE38C98437",
     "5810E6FD25874022E80361A478E3E9CF484AB04F447EFFF6F0A477CC2FC9BF548944"),
    (21, "0027CA0C7120BC3C9696766CFA", 8,
     "44A3AA3AAE6475CAA434A8E58500C6E41530538862D686EA9E81301B5AE4226BFA",
     "F2BEED7BC5098E83FEB5B31608F8E29C38819A89C8E776F1544D4151A4ED3A8B87B9CE"),
    (22, "005B8CCBCD9AF83C9696766CFA", 12,
     "EC46BB63B02520C33C49FD70B96B49E21D621741632875DB7F6C9243D2D7C2",
     "31D750A09DA3ED7FDDD49A2032AABF17EC8EBF7D22C8088C666BE5C197"),
    (23, "003EBE94044B9A3C9696766CFA", 12,
     "47A65AC78B3D594227E85E71E2FCFBB880442C731BF95167C8FFD7895E337076",
     "E882F1DBD38CE3EDA7C23F04DD65071EB41342ACDF7E00DCCEC7AE52987D"),
    (24, "008D493B30AE8B3C9696766CFA", 12,
     "6E37A6EF546D955D34AB6059ABF21C0B02FEB88F856DF4A37381BCE3CC128517D4",
     "F32905B88A641B04B9C9FFB58CC390900F3DA12AB16DCE9E82EFA16DA62059"),
)


def rfc3610_vectors():
    # (number, key, nonce, aad, plaintext, ciphertext || tag, tag length)
    key1 = bytes(range(0xC0, 0xD0))
    for n, total, hdr, out in RFC3610_1_12:
        nonce = bytes((0, 0, 0, n + 2, n + 1, n, n - 1)) + h("A0A1A2A3A4A5")
        packet = bytes(range(total))
        yield n, key1, nonce, packet[:hdr], packet[hdr:], h(out), 8 if n <= 6 else 10
    for n, nonce, hdr, packet, out in RFC3610_13_24:
        packet = h(packet)
        yield n, h(RFC3610_KEY2), h(nonce), packet[:hdr], packet[hdr:], h(out), 8 if n <= 18 else 10


# NIST SP 800-38C appendix C, examples 1-3 (example 4, with 64 KiB of
# associated data, is in test_device_aesccm.py: too slow for the pure AES in
# the VM): (nonce, aad, plaintext, ciphertext || tag, tag length).
NIST_KEY = "404142434445464748494A4B4C4D4E4F"
NIST_38C = (
    ("10111213141516", "0001020304050607", "20212223", "7162015B4DAC255D", 4),
    ("1011121314151617", "000102030405060708090A0B0C0D0E0F", "202122232425262728292A2B2C2D2E2F",
     "D2A1F0E051EA5F62081A7792073D593D1FC64FBFACCD", 6),
    ("101112131415161718191A1B", "000102030405060708090A0B0C0D0E0F10111213",
     "202122232425262728292A2B2C2D2E2F3031323334353637",
     "E3B201A9F5B71A7A9B1CEAECCD97E70B6176AAD9A4428AA5484392FBC1B09951", 8),
)

# cose-wg/Examples aes-ccm-examples/aes-ccm-enc-01.json: COSE_Encrypt0 with
# alg 10 (AES-CCM-16-64-128). The AAD is its Enc_structure
# ["Encrypt0", h'A1010A', h''] (RFC 9052 section 5.3).
COSE_ALG10 = (
    "849B57219DAE48DE646D07DBB533566E",
    "89F52F65A1C580933B5261A72F",
    "8368456E63727970743143A1010A40",
    b"This is the content.",
    "6899DA0A132BD2D2B9B10915743EE1F7B92A4680CBE82C6D0DC0033B",
)


def test_backend_named():
    assert aesccm.backend() in ("cryptolib", "ucryptolib", "python")


def test_rfc3610_packet_vectors():
    count = 0
    for n, key, nonce, aad, msg, want, m in rfc3610_vectors():
        assert ccm_encrypt(key, nonce, msg, aad, m) == want, ("RFC 3610 packet vector", n)
        assert ccm_decrypt(key, nonce, want, aad, m) == msg, ("RFC 3610 packet vector", n)
        count += 1
    assert count == 23


def test_nist_sp800_38c_examples():
    key = h(NIST_KEY)
    for nonce, aad, msg, want, m in NIST_38C:
        got = ccm_encrypt(key, h(nonce), h(msg), h(aad), m)
        assert got == h(want), ("SP 800-38C", m)
        assert ccm_decrypt(key, h(nonce), got, h(aad), m) == h(msg)


def test_cose_alg10_example():
    key, nonce, aad, msg, want = COSE_ALG10
    assert ccm_encrypt(h(key), h(nonce), msg, h(aad)) == h(want)
    assert ccm_decrypt(h(key), h(nonce), h(want), h(aad)) == msg
    assert type(ccm_decrypt(h(key), h(nonce), h(want), h(aad))) is bytes


def test_tampering_refused():
    key, nonce, aad, msg, want = COSE_ALG10
    key, nonce, aad, ct = h(key), h(nonce), h(aad), h(want)
    for i in (0, len(msg) - 1, len(msg), len(ct) - 1):  # ciphertext, then tag bytes
        bad = bytearray(ct)
        bad[i] ^= 1
        raises(ValueError, ccm_decrypt, key, nonce, bytes(bad), aad)
    raises(ValueError, ccm_decrypt, key, nonce, ct, aad[:-1] + b"\x41")  # other aad
    raises(ValueError, ccm_decrypt, key, nonce, ct, b"")  # aad dropped
    raises(ValueError, ccm_decrypt, key, nonce[:-1] + b"\x00", ct, aad)  # other nonce
    raises(ValueError, ccm_decrypt, bytes(16), nonce, ct, aad)  # other key
    raises(ValueError, ccm_decrypt, key, nonce, ct[:-1], aad)  # truncated
    raises(ValueError, ccm_decrypt, key, nonce, ct + b"\x00", aad)  # extended
    raises(ValueError, ccm_decrypt, key, nonce, ct, aad, 16)  # other tag length


def test_empty_message_and_aad():
    key, nonce = bytes(range(16)), bytes(13)
    for aad in (b"", b"a"):
        ct = ccm_encrypt(key, nonce, b"", aad)
        assert len(ct) == 8
        assert ccm_decrypt(key, nonce, ct, aad) == b""
        raises(ValueError, ccm_decrypt, key, nonce, bytes(8), aad)


def test_block_boundaries_roundtrip():
    key, nonce = bytes(range(16)), bytes(range(13))
    for n in (15, 16, 17, 31, 32, 33):
        msg = bytes(range(n))
        for aad in (b"", bytes(13), bytes(14), bytes(15), bytes(30)):
            ct = ccm_encrypt(key, nonce, msg, aad)
            assert len(ct) == n + 8
            assert ccm_decrypt(key, nonce, ct, aad) == msg


def test_accepts_bytes_like():
    key, nonce, aad, msg, want = COSE_ALG10
    got = ccm_encrypt(bytearray(h(key)), memoryview(h(nonce)), bytearray(msg), memoryview(h(aad)))
    assert got == h(want)
    assert ccm_decrypt(memoryview(h(key)), bytearray(h(nonce)), bytearray(got), bytearray(h(aad))) == msg


def test_bad_parameters_refused():
    key, nonce = bytes(16), bytes(13)
    raises(ValueError, ccm_encrypt, bytes(15), nonce, b"m")
    raises(ValueError, ccm_encrypt, bytes(32), nonce, b"m")  # alg 10 is AES-128 only
    raises(ValueError, ccm_encrypt, key, bytes(6), b"m")
    raises(ValueError, ccm_encrypt, key, bytes(14), b"m")
    for m in (0, 2, 3, 5, 17, 18):
        raises(ValueError, ccm_encrypt, key, nonce, b"m", b"", m)
        raises(ValueError, ccm_decrypt, key, nonce, bytes(20), b"", m)
    raises(ValueError, ccm_decrypt, key, nonce, bytes(7))  # shorter than the tag


def test_size_bounds():
    key, nonce = bytes(16), bytes(13)
    raises(ValueError, ccm_encrypt, key, nonce, bytes(aesccm.MAX_MSG + 1))
    raises(ValueError, ccm_decrypt, key, nonce, bytes(aesccm.MAX_MSG + 9))
    raises(ValueError, ccm_encrypt, key, nonce, b"m", bytes(aesccm.MAX_AAD + 1))
    raises(ValueError, ccm_encrypt, key, bytes(12), bytes(aesccm.MAX_MSG + 1))  # L = 3 too


def test_pure_aes_matches_fips197():
    # FIPS 197 appendix C.1 (AES-128), and the same block twice in one call
    e = aesccm._PyAES(h("000102030405060708090a0b0c0d0e0f"), 1)
    pt = h("00112233445566778899aabbccddeeff")
    want = h("69c4e0d86a7b0430d8cdb78070b4c55a")
    out = bytearray(32)
    assert e.encrypt(pt + pt, out) == want + want
    buf = bytearray(pt)
    e.encrypt(buf, buf)  # in place, as CCM calls it
    assert buf == want


def test_pure_aes_matches_cryptolib_where_present():
    # on a port with cryptolib (the unix port) the two must agree block for block
    try:
        from cryptolib import aes
    except ImportError:
        try:
            from ucryptolib import aes
        except ImportError:
            return
    key = bytes(range(3, 19))
    data = bytes((i * 7 + 1) & 255 for i in range(64))
    assert aesccm._PyAES(key, 1).encrypt(data, bytearray(64)) == aes(key, 1).encrypt(data)
