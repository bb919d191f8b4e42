// Worker thread of the network bridge (see netbridge.mjs).
//
// Owns real Node.js TCP sockets. Requests arrive on a MessagePort as
// {seq, op, args}; each reply {seq, res} is posted back on the same port,
// then the shared flag is set to seq and notified so the main thread (blocked
// in Atomics.wait) wakes up and reads the reply with receiveMessageOnPort.
//
// Replies are strings: "ok:<payload>" or "err:<errno>:<message>", errno
// being the Linux/MicroPython number (110 ETIMEDOUT, 111 ECONNREFUSED, ...).
// Every operation carries its own timeout in ms (> 0); 0 means "do not wait"
// (non-blocking recv). Binary data travels as lowercase hex.

import { workerData } from "node:worker_threads";
import net from "node:net";
import tls from "node:tls";
import { X509Certificate } from "node:crypto";
import dns from "node:dns";
import dgram from "node:dgram";
import os from "node:os";

const flag = new Int32Array(workerData.sab);
const port = workerData.port;
const HIGH_WATER = 1 << 20; // pause reading when this much is buffered
const MAX_RECV = 1 << 16;

const ERRNO = os.constants.errno;
const E = (name) => ERRNO[name] || 5; // EIO as the fallback

// A promise that resolves when one of `waiters` (a Set of callbacks, called and
// cleared by whoever has news) is called, or after ms, whichever is first.
function waitOn(waiters, ms) {
  return new Promise((resolve) => {
    let timer;
    const done = () => {
      clearTimeout(timer);
      waiters.delete(done);
      resolve();
    };
    timer = setTimeout(done, ms);
    waiters.add(done);
  });
}

class OpError extends Error {
  constructor(errno, msg) {
    super(msg);
    this.errno = errno;
  }
}

function errnoOf(e) {
  if (e instanceof OpError) return e.errno;
  if (e && (e.code === "ENOTFOUND" || e.code === "EAI_AGAIN" || e.code === "EAI_NONAME")) return -2;
  if (e && typeof e.code === "string" && ERRNO[e.code]) return ERRNO[e.code];
  return E("EIO");
}

class Conn {
  constructor(sock) {
    this.attach(sock);
  }
  attach(sock) {
    this.sock = sock;
    this.chunks = [];
    this.len = 0;
    this.eof = false;
    this.err = null;
    this.waiters = new Set();
    sock.on("data", (d) => {
      this.chunks.push(d);
      this.len += d.length;
      if (this.len > HIGH_WATER) sock.pause();
      this.wake();
    });
    sock.on("end", () => {
      this.eof = true;
      this.wake();
    });
    sock.on("error", (e) => {
      this.err = e;
      this.wake();
    });
    sock.on("close", () => {
      this.eof = true;
      this.wake();
    });
  }
  wake() {
    for (const w of this.waiters) w();
    this.waiters.clear();
  }
  // Resolves when something changes (data, EOF, error) or after ms.
  waitChange(ms) {
    return waitOn(this.waiters, ms);
  }
  take(n) {
    const buf = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = buf.subarray(0, n);
    const rest = buf.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.len = rest.length;
    if (this.len <= HIGH_WATER && this.sock.isPaused()) this.sock.resume();
    return out;
  }
}

// A UDP socket as MicroPython's lwIP socket holds one (extmod/modlwip.c, v1.22-v1.24):
// ONE incoming datagram at a time ("no room in the inn": another arriving
// before it is read is dropped); once connected, datagrams from any other
// endpoint are dropped (lwIP's udp_input matches a connected pcb's remote);
// a receive waits in 100 ms steps (timeout / 100 of them: under 100 ms it
// does not wait at all) and then fails with ETIMEDOUT, also when the timeout
// is 0; a datagram longer than the read is cut to it (pbuf_copy_partial).
class Udp {
  constructor() {
    this.sock = dgram.createSocket("udp4");
    this.slot = null; // {data, address, port}
    this.remote = null; // {address, port} once connected
    this.waiters = new Set();
    this.bound = new Promise((resolve, reject) => {
      this.sock.once("error", reject);
      this.sock.bind(0, "0.0.0.0", () => {
        this.sock.off("error", reject);
        resolve();
      });
    });
    this.bound.catch(() => {});
    this.sock.on("message", (data, rinfo) => {
      if (this.remote && (rinfo.address !== this.remote.address || rinfo.port !== this.remote.port)) return;
      if (this.slot) return; // dropped: the one slot is taken
      this.slot = { data, address: rinfo.address, port: rinfo.port };
      for (const w of this.waiters) w();
      this.waiters.clear();
    });
    this.sock.on("error", () => {});
  }
  waitData(ms) {
    return waitOn(this.waiters, ms);
  }
}

const conns = new Map();
let nextId = 1;

function getConn(id) {
  const c = conns.get(id);
  if (!c) throw new OpError(E("EBADF"), "socket closed");
  return c;
}

function withTimeout(promise, ms, onTimeout) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => {
        if (onTimeout) onTimeout();
        reject(new OpError(E("ETIMEDOUT"), "timed out"));
      }, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const ops = {
  ping() {
    return "pong";
  },

  async resolve(host, ms) {
    if (net.isIP(host)) return host;
    const r = await withTimeout(dns.promises.lookup(host, { family: 4 }), ms);
    return r.address;
  },

  async connect(host, portNo, ms) {
    const sock = new net.Socket();
    const c = new Conn(sock);
    await withTimeout(
      new Promise((resolve, reject) => {
        const onErr = (e) => reject(e);
        sock.once("error", onErr);
        sock.connect({ host, port: portNo }, () => {
          sock.off("error", onErr);
          resolve();
        });
      }),
      ms,
      () => sock.destroy(),
    );
    sock.setNoDelay(true);
    const id = nextId++;
    conns.set(id, c);
    return String(id);
  },

  // Whether hex is one X.509 certificate (DER, or PEM when pem is 1).
  x509(hex, pem) {
    const raw = Buffer.from(hex, "hex");
    if (!pem && raw.includes("-----BEGIN")) throw new OpError(E("EINVAL"), "PEM");
    try {
      new X509Certificate(raw);
    } catch (e) {
      throw new OpError(E("EINVAL"), "invalid cert");
    }
    return "ok";
  },

  // Upgrade connection id to TLS, as a client: the handshake runs over the
  // same TCP connection, later recv/send on id carry the decrypted stream.
  // caHex: the trusted CA, DER or PEM, as hex ("" for none); verify: 1 to
  // check the chain and the name (an IP address against the certificate's IP
  // addresses). Verification failures answer "err:verify:<reason>".
  async starttls(id, servername, caHex, verify, ms) {
    const c = getConn(id);
    if (c.err) throw c.err;
    if (c.len || c.eof) throw new OpError(E("EPROTO"), "data before the TLS handshake");
    let ca;
    if (caHex) {
      const raw = Buffer.from(caHex, "hex");
      try {
        ca = new X509Certificate(raw).toString(); // DER or PEM in, PEM out
      } catch (e) {
        throw new OpError(E("EINVAL"), "invalid cert");
      }
    }
    const raw = c.sock;
    raw.removeAllListeners("data");
    raw.removeAllListeners("end");
    raw.removeAllListeners("close");
    const opts = { socket: raw, rejectUnauthorized: false, ca };
    if (!net.isIP(servername)) opts.servername = servername;
    const ts = tls.connect(opts);
    c.chunks = [];
    c.len = 0;
    c.attach(ts);
    await withTimeout(
      new Promise((resolve, reject) => {
        ts.once("secureConnect", resolve);
        ts.once("error", reject);
        raw.once("close", () => reject(new OpError(E("ECONNRESET"), "connection closed during the handshake")));
      }),
      ms,
      () => ts.destroy(),
    );
    if (verify) {
      let why = ts.authorized ? null : String(ts.authorizationError);
      if (!why) {
        const e = tls.checkServerIdentity(servername, ts.getPeerCertificate());
        if (e) why = e.code || e.message;
      }
      if (why) {
        ts.destroy();
        return "verify:" + why;
      }
    }
    return "ok";
  },

  async send(id, hex, ms) {
    const c = getConn(id);
    if (c.err) throw c.err;
    if (c.sock.destroyed || c.sock.writableEnded) throw new OpError(E("EPIPE"), "broken pipe");
    const data = Buffer.from(hex, "hex");
    await withTimeout(
      new Promise((resolve, reject) => {
        c.sock.write(data, (e) => (e ? reject(e) : resolve()));
      }),
      ms,
    );
    return String(data.length);
  },

  async recv(id, n, ms) {
    const c = getConn(id);
    n = Math.max(0, Math.min(n, MAX_RECV));
    const deadline = Date.now() + ms;
    for (;;) {
      if (c.len > 0) return c.take(n).toString("hex");
      if (c.err) throw c.err;
      if (c.eof) return "";
      const left = deadline - Date.now();
      if (ms === 0) throw new OpError(E("EAGAIN"), "would block");
      if (left <= 0) throw new OpError(E("ETIMEDOUT"), "timed out");
      await c.waitChange(left);
    }
  },

  async udp_open() {
    const u = new Udp();
    await u.bound;
    const id = nextId++;
    conns.set(id, u);
    return String(id);
  },

  udp_connect(id, host, portNo) {
    const u = getConn(id);
    u.remote = { address: host, port: portNo };
    return "";
  },

  async udp_sendto(id, hex, host, portNo) {
    const u = getConn(id);
    const data = Buffer.from(hex, "hex");
    if (!host) {
      if (!u.remote) throw new OpError(E("ENOTCONN"), "not connected");
      host = u.remote.address;
      portNo = u.remote.port;
    }
    await new Promise((resolve, reject) => u.sock.send(data, portNo, host, (e) => (e ? reject(e) : resolve())));
    return String(data.length);
  },

  // One datagram (cut to n bytes) as "hex,address,port"; ms < 0: block (up to the bridge's cap).
  async udp_recv(id, n, ms) {
    const u = getConn(id);
    if (!u.slot && ms !== 0) {
      const wait = ms < 0 ? ms : Math.floor(ms / 100) * 100;
      const deadline = Date.now() + (wait < 0 ? 1e9 : wait);
      while (!u.slot && Date.now() < deadline) await u.waitData(deadline - Date.now());
    }
    if (!u.slot) throw new OpError(E("ETIMEDOUT"), "timed out");
    const { data, address, port: from } = u.slot;
    u.slot = null;
    return data.subarray(0, Math.max(0, n)).toString("hex") + "," + address + "," + from;
  },

  shutdown(id) {
    const c = getConn(id);
    c.sock.end();
    return "";
  },

  close(id) {
    const c = conns.get(id);
    if (c) {
      conns.delete(id);
      if (c instanceof Udp) c.sock.close();
      else c.sock.destroy();
    }
    return "";
  },
};

port.on("message", async (msg) => {
  let res;
  try {
    const fn = ops[msg.op];
    if (!fn) throw new OpError(E("EINVAL"), "unknown op " + msg.op);
    res = "ok:" + (await fn(...msg.args));
  } catch (e) {
    res = "err:" + errnoOf(e) + ":" + String((e && (e.code || e.message)) || e);
  }
  port.postMessage({ seq: msg.seq, res });
  Atomics.store(flag, 0, msg.seq);
  Atomics.notify(flag, 0);
});
