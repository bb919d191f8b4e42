# ucrumb.http's TLS set-up on MicroPython ports, which the VM cannot run (its
# port has no ssl/tls): a stand-in `tls`/`ssl` module records what the client
# asks of it. Real TLS is tested on CPython in test_device_tls.py.
import sys

from ucrumb import http

from cases import raises


class Port:
    # The MicroPython ssl/tls module API (SSLContext, verify_mode, load_verify_locations, wrap_socket).
    PROTOCOL_TLS_CLIENT = 2
    CERT_NONE = 0
    CERT_REQUIRED = 2

    def __init__(self, name, has_context=True):
        self.__name__ = name
        self.calls = []
        if has_context:
            port = self

            class SSLContext:
                def __init__(self, protocol):
                    port.calls.append(("context", protocol))
                    self.verify_mode = port.CERT_NONE  # MicroPython's default: no verification

                def load_verify_locations(self, *args, **kw):
                    port.calls.append(("ca", args, kw))

                def wrap_socket(self, sock, server_hostname=None):
                    port.calls.append(("wrap", server_hostname, self.verify_mode))
                    return ("wrapped", sock)

            self.SSLContext = SSLContext
        else:
            def wrap_socket(sock, server_hostname=None):
                self.calls.append(("wrap", server_hostname, None))
                return ("wrapped", sock)

            self.wrap_socket = wrap_socket


def with_port(port, fn):
    saved = {k: sys.modules.get(k) for k in ("tls", "ssl")}
    sys.modules["tls"] = port
    sys.modules["ssl"] = port
    try:
        return fn()
    finally:
        for k in saved:
            if saved[k] is None:
                del sys.modules[k]
            else:
                sys.modules[k] = saved[k]


CA = b"0\x82\x01\x00fake DER certificate"


def test_verifies_with_the_given_ca():
    p = Port("tls")
    assert with_port(p, lambda: http._tls("sock", "issuer.local", CA)) == ("wrapped", "sock")
    assert p.calls == [("context", 2), ("ca", (CA,), {}), ("wrap", "issuer.local", 2)]


def test_micropython_1_22_ssl_takes_cadata_by_keyword():
    p = Port("ssl")
    with_port(p, lambda: http._tls("sock", "h", CA))
    assert p.calls[1] == ("ca", (), {"cadata": CA}) and p.calls[2][2] == 2


def test_no_ca_refuses_instead_of_not_verifying():
    p = Port("tls")
    e = raises(http.HTTPError, with_port, p, lambda: http._tls("sock", "h", None))
    assert "cadata" in str(e)
    assert not [c for c in p.calls if c[0] == "wrap"]


def test_explicit_opt_out():
    p = Port("tls")
    with_port(p, lambda: http._tls("sock", "h", False))
    assert p.calls == [("context", 2), ("wrap", "h", 0)]


def test_port_that_cannot_verify():
    p = Port("ssl", has_context=False)
    raises(http.HTTPError, with_port, p, lambda: http._tls("sock", "h", CA))
    assert p.calls == []
    assert with_port(p, lambda: http._tls("sock", "h", False)) == ("wrapped", "sock")
