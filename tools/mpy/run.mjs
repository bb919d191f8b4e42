#!/usr/bin/env node
// Run a Python file inside the official MicroPython WebAssembly port
// (npm @micropython/micropython-webassembly-pyscript) under Node.js.
//
//   node tools/mpy/run.mjs [options] FILE.py [ARG...]
//   node tools/mpy/run.mjs [options] -c CODE [ARG...]
//
// Options:
//   --heap N[k|m]          initial MicroPython GC heap (default 256k; the
//                          pyscript build grows the heap on demand, see
//                          docs/micropython-vm.md)
//   --pystack N            Python stack size in words (default 2048)
//   --path HOST[:VMDIR]    copy the .py/.mpy/.json files under directory HOST into
//                          the VM's filesystem at VMDIR (default /lib, which is
//                          on sys.path); repeatable
//   --no-default-paths     do not copy device/ and tools/mpy/vmlib/ to /lib
//   --net-max-timeout S    hard cap in seconds for any blocking socket
//                          operation made through the bridge (default 30)
//
// By default device/ (package ucrumb) and tools/mpy/vmlib/ (the `socket`
// bridge module) are copied to /lib. The socket bridge's worker thread is
// started lazily on the first network call.
//
// stdout/stderr of the VM go to this process's stdout/stderr. Exit status:
// 0 on success, the SystemExit code if the program raised SystemExit, 1 on an
// uncaught exception (traceback on stderr), 2 on a runner/set-up error.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULTS, DEVICE_DIR, SetupError, VMLIB_DIR, copyTree, loadVM, parseSize as size } from "./vmsetup.mjs";

function die(msg) {
  process.stderr.write("run.mjs: " + msg + "\n");
  process.exit(2);
}

function parseSize(s) {
  try {
    return size(s);
  } catch (e) {
    die(e.message);
  }
}

function parseArgs(argv) {
  const o = { ...DEFAULTS, paths: [], defaults: true, file: null, code: null, args: [] };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    const next = () => (i + 1 < argv.length ? argv[++i] : die("missing value for " + a));
    if (a === "--heap") o.heap = parseSize(next());
    else if (a === "--pystack") o.pystack = parseSize(next());
    else if (a === "--path") o.paths.push(next());
    else if (a === "--no-default-paths") o.defaults = false;
    else if (a === "--net-max-timeout") o.netMax = Number(next());
    else if (a === "-c") {
      o.code = next();
      i++;
      break;
    } else if (a === "-h" || a === "--help") {
      process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1, 27).map((l) => l.replace(/^\/\/ ?/, "")).join("\n") + "\n");
      process.exit(0);
    } else if (a.startsWith("--")) die("unknown option " + a);
    else {
      o.file = a;
      i++;
      break;
    }
  }
  o.args = argv.slice(i);
  if (!o.file && o.code === null) die("nothing to run (give FILE.py or -c CODE; --help for usage)");
  if (!(o.netMax > 0)) die("--net-max-timeout must be > 0");
  return o;
}

// Byte-level output sink: the VM emits one byte at a time; pass whole lines.
function sink(fd) {
  let buf = [];
  const flush = () => {
    if (buf.length) {
      const b = Buffer.from(buf);
      buf = [];
      (fd === 1 ? process.stdout : process.stderr).write(b);
    }
  };
  const put = (chunk) => {
    for (const c of chunk) {
      buf.push(c);
      if (c === 10 || buf.length >= 8192) flush();
    }
  };
  return { put, flush };
}

const WRAPPER = `
import sys
def _crumb_main(path, src):
    g = {"__name__": "__main__", "__file__": path}
    try:
        exec(compile(src, path, "exec"), g)
        return 0
    except SystemExit as e:
        c = e.args[0] if e.args else None
        if c is None:
            return 0
        if isinstance(c, int):
            return c
        print(c, file=sys.stderr)
        return 1
    except BaseException as e:
        sys.print_exception(e, sys.stderr)
        return 1
`;

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const out = sink(1);
  const err = sink(2);
  const { mp, closeNet } = await loadVM({ heap: o.heap, pystack: o.pystack, netMax: o.netMax, stdout: out.put, stderr: err.put });

  const paths = [];
  if (o.defaults) paths.push(DEVICE_DIR + ":/lib", VMLIB_DIR + ":/lib");
  paths.push(...o.paths);
  for (const p of paths) {
    const k = p.lastIndexOf(":");
    const [h, v] = k > 0 && p.slice(k + 1).startsWith("/") ? [p.slice(0, k), p.slice(k + 1)] : [p, "/lib"];
    copyTree(mp.FS, path.resolve(h), v);
  }

  let src, vmPath;
  if (o.code !== null) {
    src = o.code;
    vmPath = "<string>";
  } else {
    if (!fs.existsSync(o.file)) die("no such file: " + o.file);
    src = fs.readFileSync(o.file, "utf8");
    vmPath = "/run/" + path.basename(o.file);
    mp.FS.mkdirTree("/run");
    mp.FS.writeFile(vmPath, src);
  }

  let rc;
  try {
    mp.runPython(WRAPPER);
    const sys = mp.pyimport("sys");
    // sys.argv as on the unix port: [script, args...]
    mp.runPython("sys.argv[:] = []");
    for (const a of [vmPath, ...o.args]) sys.argv.append(a);
    mp.globals.set("_crumb_src", src);
    mp.globals.set("_crumb_path", vmPath);
    mp.runPython("_crumb_rc = _crumb_main(_crumb_path, _crumb_src)");
    rc = mp.globals.get("_crumb_rc");
  } catch (e) {
    err.put(Buffer.from("run.mjs: VM error: " + (e && (e.message || e)) + "\n"));
    rc = 1;
  }
  out.flush();
  err.flush();
  await closeNet();
  process.exitCode = typeof rc === "number" ? rc & 255 : 1;
}

main().catch((e) => {
  if (e instanceof SetupError) die(e.message);
  process.stderr.write("run.mjs: " + (e && e.stack ? e.stack : e) + "\n");
  process.exit(2);
});
