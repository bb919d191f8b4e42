"""The real issuer app in the test process, where a test must steer it (clock, TLS).

The other device tests use `crumb issuer serve` in a child process
(crumb.tooling.bench.device.DeviceIssuer, built on crumb.tooling.localissuer.LocalIssuer).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Self

from crumb.tooling.bench.device import BENCH_POLICY, EnrolledIssuer


class InProcessIssuer(EnrolledIssuer):
    """The real issuer (IssuerApp under uvicorn, as `crumb issuer serve` runs it) in a
    thread of the test process, for what the command line cannot do: ``skew``
    (seconds) is added to the issuer's clock, and ``tls`` = (certificate file,
    key file) serves https.
    """

    def __init__(self, policy: str = BENCH_POLICY, devices: dict[str, str | None] | None = None,
                 data_dir: str | Path | None = None, tls: tuple[str, str] | None = None) -> None:
        super().__init__(policy, devices, data_dir)
        self.tls = tls  # (certificate file, key file): serve https
        self.skew = 0.0

    def __enter__(self) -> Self:
        import uvicorn

        from crumb.issuer.app import IssuerApp, Settings, build_issuer
        from crumb.issuer.server import bind, uvicorn_config

        data, credentials = self._enroll()
        self.sock = bind("127.0.0.1", 0, reuse_port=False)
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        self.creds.update(credentials(self.url))
        self.issuer = build_issuer(Settings(data, data.policy, audit_sync="NORMAL"))
        self.issuer.clock = lambda: time.time() + self.skew
        config = uvicorn_config(IssuerApp(self.issuer), "error")
        if self.tls:
            config.ssl_certfile, config.ssl_keyfile = (str(p) for p in self.tls)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60  # generous: only an issuer that hangs takes this long
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the issuer did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        if self._tmp is not None:
            self._tmp.cleanup()
