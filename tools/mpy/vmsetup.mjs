// Set-up shared by the VM's two front ends: run.mjs (runs one script) and
// repl.mjs (the VM's REPL on stdin/stdout, for mpremote through a pty).
//
// loadVM() loads the official MicroPython WebAssembly port (npm
// @micropython/micropython-webassembly-pyscript) and registers the
// `_crumbnet` JS module, the synchronous TCP/TLS/UDP bridge (netbridge.mjs) that
// vmlib/socket.py and vmlib/tls.py call; its worker thread starts on the
// first network call and stops with close().

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createNetBridge } from "./netbridge.mjs";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, "..", "..");
export const DEVICE_DIR = path.join(REPO, "device");
export const VMLIB_DIR = path.join(HERE, "vmlib");
const PKG = "@micropython/micropython-webassembly-pyscript";
const PKG_MJS = path.join(HERE, "node_modules", PKG, "micropython.mjs");

// A set-up problem (bad option, missing npm package): the front ends print
// its message and exit with status 2.
export class SetupError extends Error {}

export const DEFAULTS = { heap: 256 * 1024, pystack: 2048, netMax: 30 };

export function parseSize(s) {
  const m = /^(\d+)([kKmM]?)$/.exec(s || "");
  if (!m) throw new SetupError("bad size: " + s);
  return parseInt(m[1], 10) * ({ k: 1024, m: 1048576 }[m[2].toLowerCase()] || 1);
}

// Recursively copy .py/.mpy/.json files (code and test data, nothing else) into the VM filesystem.
export function copyTree(FS, hostDir, vmDir) {
  if (!fs.existsSync(hostDir) || !fs.statSync(hostDir).isDirectory()) throw new SetupError("not a directory: " + hostDir);
  FS.mkdirTree(vmDir);
  for (const ent of fs.readdirSync(hostDir, { withFileTypes: true })) {
    if (ent.name === "__pycache__" || ent.name.startsWith(".")) continue;
    const h = path.join(hostDir, ent.name);
    const v = vmDir.replace(/\/$/, "") + "/" + ent.name;
    if (ent.isDirectory()) copyTree(FS, h, v);
    else if (/\.(py|mpy|json)$/.test(ent.name)) FS.writeFile(v, fs.readFileSync(h));
  }
}

// A fresh VM: {mp, closeNet}. `stdout`/`stderr` get one Uint8Array per byte
// (linebuffer off: the REPL's output has no lines, e.g. the raw REPL's ">").
export async function loadVM({ heap = DEFAULTS.heap, pystack = DEFAULTS.pystack, netMax = DEFAULTS.netMax, stdout, stderr }) {
  if (!fs.existsSync(PKG_MJS))
    throw new SetupError(`MicroPython WebAssembly port not installed (${PKG_MJS} missing); run: bash tools/setup_test_env.sh`);
  const { loadMicroPython } = await import(pathToFileURL(PKG_MJS).href);
  const mp = await loadMicroPython({ heapsize: heap, pystack, linebuffer: false, stdout, stderr });

  let bridge = null;
  const lazy = (name) => (...a) => {
    if (!bridge) bridge = createNetBridge({ maxTimeoutMs: Math.round(netMax * 1000) });
    return bridge.module[name](...a);
  };
  const ops = ["resolve", "connect", "starttls", "x509", "send", "recv", "shutdown", "close", "ping",
    "udp_open", "udp_connect", "udp_sendto", "udp_recv"];
  mp.registerJsModule("_crumbnet", Object.fromEntries(ops.map((op) => [op, lazy(op)])));
  // Stops the worker, which closes every socket it holds.
  const closeNet = async () => {
    const b = bridge;
    bridge = null;
    if (b) await b.close();
  };
  return { mp, closeNet };
}
