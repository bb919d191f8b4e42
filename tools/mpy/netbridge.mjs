// Synchronous TCP and UDP bridge for code running in the MicroPython WebAssembly VM.
//
// MicroPython calls JavaScript functions synchronously and the VM runs on the
// Node main thread, so a socket call cannot simply await Node's async `net`
// API. Instead a worker thread (networker.mjs) owns the sockets; each call
// here posts a request to the worker and blocks the main thread in
// Atomics.wait on a SharedArrayBuffer flag until the worker has posted its
// reply, which is then read with receiveMessageOnPort. The worker enforces the
// per-operation timeout; Atomics.wait has its own deadline (op timeout plus a
// grace period) so a stuck worker also ends in a timeout, never a hang.
//
// createNetBridge() returns {module, close}: `module` is registered in the VM
// as the JS module `_crumbnet` (used by vmlib/socket.py); `close` stops the
// worker and its sockets.

import { Worker, MessageChannel, receiveMessageOnPort } from "node:worker_threads";

const GRACE_MS = 2000;

export function createNetBridge({ maxTimeoutMs = 30000 } = {}) {
  const sab = new SharedArrayBuffer(4);
  const flag = new Int32Array(sab);
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(new URL("./networker.mjs", import.meta.url), {
    workerData: { sab, port: port2 },
    transferList: [port2],
  });
  worker.unref();
  port1.unref();
  let seq = 0;
  let closed = false;

  // Clamp a timeout given by Python (ms; negative = blocking) to the cap.
  const clamp = (ms) => (ms < 0 || ms > maxTimeoutMs ? maxTimeoutMs : Math.floor(ms));

  function call(op, args, ms) {
    if (closed) return "err:9:bridge closed";
    const s = ++seq;
    let seen = Atomics.load(flag, 0);
    port1.postMessage({ seq: s, op, args });
    const deadline = Date.now() + ms + GRACE_MS;
    for (;;) {
      let m;
      while ((m = receiveMessageOnPort(port1))) {
        if (m.message.seq === s) return m.message.res;
        // a late reply to an op that already timed out on this side: drop it
      }
      const left = deadline - Date.now();
      if (left <= 0) return "err:110:bridge timeout (worker did not answer)";
      Atomics.wait(flag, 0, seen, left);
      seen = Atomics.load(flag, 0);
    }
  }

  const module = {
    maxTimeoutMs,
    resolve: (host, ms) => call("resolve", [String(host), clamp(ms)], clamp(ms)),
    connect: (host, port, ms) => call("connect", [String(host), port, clamp(ms)], clamp(ms)),
    x509: (hex, pem) => call("x509", [String(hex), pem ? 1 : 0], 5000),
    starttls: (id, servername, caHex, verify, ms) =>
      call("starttls", [id, String(servername), String(caHex), verify ? 1 : 0, clamp(ms)], clamp(ms)),
    send: (id, hex, ms) => call("send", [id, String(hex), clamp(ms)], clamp(ms)),
    recv: (id, n, ms) => {
      const t = ms === 0 ? 0 : clamp(ms);
      return call("recv", [id, n, t], t);
    },
    udp_open: () => call("udp_open", [], 5000),
    udp_connect: (id, host, port) => call("udp_connect", [id, String(host), port], 1000),
    udp_sendto: (id, hex, host, port) => call("udp_sendto", [id, String(hex), String(host), port], 5000),
    udp_recv: (id, n, ms) => {
      const t = ms < 0 ? -1 : Math.min(ms, maxTimeoutMs);
      return call("udp_recv", [id, n, t < 0 ? maxTimeoutMs : t], t < 0 ? maxTimeoutMs : t);
    },
    shutdown: (id) => call("shutdown", [id], 1000),
    close: (id) => call("close", [id], 1000),
    ping: () => call("ping", [], 10000),
  };

  function close() {
    if (closed) return;
    closed = true;
    port1.close();
    return worker.terminate();
  }

  return { module, close };
}
