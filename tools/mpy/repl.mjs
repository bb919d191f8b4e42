#!/usr/bin/env node
// The MicroPython WebAssembly port's REPL on stdin/stdout, behaving as a
// board's serial REPL does for mpremote (tools/mpy/replpty.py puts it behind
// a pseudo-terminal: `mpremote connect /dev/pts/N ...`).
//
//   node tools/mpy/repl.mjs [--root DIR] [--heap N[k|m]] [--pystack N] [--net-max-timeout S]
//
//   --root DIR   the board's filesystem ("flash"): a host directory, read and
//                written live (default: a new temporary directory, removed
//                when this program ends)
//   --heap, --pystack, --net-max-timeout   as for run.mjs
//
// Bytes read from stdin go to the port's event-driven REPL
// (replProcessChar: shared/runtime/pyexec.c, friendly and raw REPL); what the
// VM prints (stdout and stderr, one stream as on a board) goes to stdout.
// The VM is set up as run.mjs sets it up (vmsetup.mjs: the same port, heap,
// and `_crumbnet` bridge, so sockets and TLS reach real servers), and as a
// board boots (replboard.py): socket/tls built in, the flash mounted at "/"
// with /lib on sys.path, boot.py then main.py run at start.
//
// Done here because the port cannot (docs/micropython-vm.md, "The REPL
// bridge", says what and from which source):
// * soft reset (Ctrl-D, or SystemExit, in the REPL): the port's REPL returns
//   PYEXEC_FORCED_EXIT and stops; a board then prints "MPY: soft reboot",
//   restarts the interpreter and runs boot.py/main.py (ports/rp2/main.c).
//   Here: a new VM instance over the same flash, same steps.
// * raw-paste mode (Ctrl-E 'A' Ctrl-A in the raw REPL): the port's
//   do_reader_stdin() would read stdin through mp_hal_stdin_rx_chr(), which
//   this port defines as (0) (ports/webassembly/mphalport.h): an endless
//   stream of NULs. The protocol (window, flow control, end) is done here as
//   pyexec.c does it, and the code is run by the port's raw REPL.
//
// Exit: when stdin ends (status 0, the temporary flash removed), or by a signal.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { mountHostDir, useBoardErrno } from "./hostfs.mjs";
import { DEFAULTS, HERE, SetupError, VMLIB_DIR, copyTree, loadVM, parseSize } from "./vmsetup.mjs";

const BOARD_PY = fs.readFileSync(path.join(HERE, "replboard.py"), "utf8");

// shared/runtime/pyexec.h, py/mphal.h
const FORCED_EXIT = 0x100;
const CTRL_A = 1, CTRL_B = 2, CTRL_C = 3, CTRL_D = 4, CTRL_E = 5;
// pyexec.c: MICROPY_REPL_STDIN_BUFFER_MAX (256, the default every port but
// the nrf/zephyr ones keeps); the raw-paste window is half of it.
const PASTE_WINDOW = 256 / 2;

function die(msg) {
  process.stderr.write("repl.mjs: " + msg + "\n");
  process.exit(2);
}

function parseArgs(argv) {
  const o = { ...DEFAULTS, root: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => (i + 1 < argv.length ? argv[++i] : die("missing value for " + a));
    if (a === "--root") o.root = next();
    else if (a === "--heap") o.heap = parseSize(next());
    else if (a === "--pystack") o.pystack = parseSize(next());
    else if (a === "--net-max-timeout") o.netMax = Number(next());
    else if (a === "-h" || a === "--help") {
      const head = fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1, 11);
      process.stdout.write(head.map((l) => l.replace(/^\/\/ ?/, "")).join("\n") + "\n");
      process.exit(0);
    } else die("unknown option " + a);
  }
  if (!(o.netMax > 0)) die("--net-max-timeout must be > 0");
  if (o.root !== null && !(fs.existsSync(o.root) && fs.statSync(o.root).isDirectory())) die("--root: not a directory: " + o.root);
  return o;
}

// Everything goes to fd 1 with blocking writes, in order: the VM's bytes as
// it prints them (flushed at each newline and after each input byte) and the
// bytes this bridge sends itself.
class Output {
  constructor() {
    this.buf = [];
    this.head = []; // first bytes the VM printed during the current call
    this.muted = false;
    this.drop = []; // bytes expected next from the VM, to be swallowed
  }
  vm(chunk) {
    for (const c of chunk) {
      if (this.head.length < 2) this.head.push(c);
      if (this.muted) continue;
      if (this.drop.length) {
        if (this.drop[0] === c) {
          this.drop.shift();
          continue;
        }
        process.stderr.write(`repl.mjs: expected byte ${this.drop[0]} from the VM, got ${c}\n`);
        this.drop = [];
      }
      this.buf.push(c);
      if (c === 10 || this.buf.length >= 4096) this.flush();
    }
  }
  send(bytes) {
    for (const c of typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes) this.buf.push(c);
    this.flush();
  }
  flush() {
    let b = Buffer.from(this.buf);
    this.buf = [];
    while (b.length) {
      try {
        b = b.subarray(fs.writeSync(1, b));
      } catch (e) {
        if (e.code !== "EAGAIN") throw e;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2); // fd 1 is non-blocking: wait for room
      }
    }
  }
}

class Board {
  constructor(o, root) {
    this.o = o;
    this.root = root;
    this.out = new Output();
    this.mp = null;
    this.closeNet = null;
    this.raw = false; // pyexec_mode_kind == PYEXEC_MODE_RAW_REPL
    this.line = []; // bytes fed since the last control byte 1..4 ...
    this.silent = true; // ... none of which made the VM print (raw REPL)
    this.paste = null; // raw-paste state: {code, remain}
  }

  // Feed one byte to the port's REPL; the return value is pyexec's.
  feed(c) {
    this.out.head = [];
    let ret;
    try {
      ret = this.mp.replProcessChar(c);
    } catch (e) {
      process.stderr.write("repl.mjs: VM error: " + (e && (e.message || e)) + "\n");
      ret = 0;
    }
    if (ret & FORCED_EXIT) {
      // The raw REPL answers Ctrl-D (and runs code) after "OK"; the friendly
      // REPL's last output starts with "\r\n" (pyexec.c): the mode the board
      // was in when it reset, which survives the reset.
      this.raw = this.out.head[0] === 0x4f && this.out.head[1] === 0x4b;
    }
    return ret;
  }

  // pyexec_file_if_exists(path) through replboard.py's _crumb_pyexec.
  pyexecFile(name) {
    this.mp.runPython(`_crumb_rc = _crumb_pyexec(${JSON.stringify(name)})`);
    const rc = this.mp.globals.get("_crumb_rc");
    this.mp.runPython("del _crumb_rc");
    return rc;
  }

  // Start the interpreter, as ports/rp2/main.c's main loop does after power-on
  // and after each soft reset: init, _boot.py (replboard.py), boot.py, main.py
  // (friendly REPL mode only, and only if boot.py did not fail), then the REPL.
  async start() {
    for (;;) {
      const { mp, closeNet } = await loadVM({
        heap: this.o.heap, pystack: this.o.pystack, netMax: this.o.netMax,
        stdout: (b) => this.out.vm(b), stderr: (b) => this.out.vm(b),
      });
      this.mp = mp;
      this.closeNet = closeNet;
      copyTree(mp.FS, VMLIB_DIR, "/vmlib");
      mountHostDir(mp.FS, this.root, "/flash");
      useBoardErrno(mp.FS);
      mp.runPython(BOARD_PY);
      let ret = this.pyexecFile("boot.py");
      if (!(ret & FORCED_EXIT) && !this.raw && ret !== 0) ret = this.pyexecFile("main.py");
      this.mp.runPython("del _crumb_pyexec");
      this.out.flush();
      if (ret & FORCED_EXIT) {
        await this.stop();
        continue;
      }
      break;
    }
    // pyexec_event_repl_init() starts in the mode pyexec_mode_kind says; a new
    // VM instance starts in the friendly mode, so for the raw REPL the
    // friendly banner is not shown and the friendly->raw switch's "\r\n" is
    // dropped: what remains is the raw REPL's "raw REPL; CTRL-B to exit\r\n>".
    if (this.raw) {
      this.out.muted = true;
      this.mp.replInit();
      this.out.muted = false;
      this.out.drop = [13, 10];
      this.feed(CTRL_A);
    } else {
      this.mp.replInit();
    }
    this.out.flush();
    this.line = [];
    this.silent = true;
  }

  async stop() {
    // MPY: soft reboot (ports/rp2/main.c, soft_reset_exit; mp_printf turns
    // "\n" into "\r\n"). The sockets close, as gc_sweep_all() runs their
    // finalisers on a board.
    this.out.send("MPY: soft reboot\r\n");
    const closeNet = this.closeNet;
    this.mp = null;
    this.closeNet = null;
    if (closeNet) await closeNet();
  }

  async input(c) {
    if (this.paste) return this.pasteByte(c);
    if (c === CTRL_A && this.line.length === 2 && this.line[0] === CTRL_E && this.line[1] === 0x41 && this.silent) {
      // Raw REPL with "\x05A" typed: raw-paste mode (pyexec.c,
      // pyexec_raw_repl_process_char). Clear the VM's line (Ctrl-C in the
      // raw REPL, which prints nothing), then answer as do_reader_stdin('A')
      // and mp_reader_new_stdin() do: "R\x01", the window size (16-bit LE),
      // and 0x01 for the second free window.
      this.feed(CTRL_C);
      this.line = [];
      this.paste = { code: [], remain: PASTE_WINDOW };
      this.out.send(Buffer.from([0x52, 0x01, PASTE_WINDOW & 0xff, PASTE_WINDOW >> 8, 0x01]));
      return;
    }
    const ret = this.feed(c);
    if (c >= CTRL_A && c <= CTRL_D) {
      this.line = [];
      this.silent = true;
    } else {
      if (this.line.length < 3) this.line.push(c);
      if (this.out.head.length) this.silent = false;
    }
    this.out.flush();
    if (ret & FORCED_EXIT) await this.reset();
  }

  // One byte of raw-paste data, as mp_reader_stdin_readbyte() takes it.
  async pasteByte(c) {
    const p = this.paste;
    if (c === CTRL_C || c === CTRL_D) {
      this.paste = null;
      this.out.send("\x04"); // end of data, acknowledged to the host
      if (c === CTRL_C) {
        // KeyboardInterrupt raised by the reader while compiling: pyexec
        // prints the EOF after normal output, the exception (no traceback:
        // traceback_data is cleared) and the EOF after error output, then the
        // raw REPL's prompt.
        this.out.send("\x04KeyboardInterrupt: \r\n\x04>");
        return;
      }
      return this.runPasted(Buffer.from(p.code));
    }
    p.code.push(c);
    if (--p.remain === 0) {
      this.out.send("\x01"); // another window is free
      p.remain = PASTE_WINDOW;
    }
  }

  // Run raw-pasted code with the port's raw REPL (same compile and run as
  // raw-paste: parse_compile_execute, file input, "<stdin>", EOF markers), its
  // "OK" swallowed: raw-paste has none.
  async runPasted(code) {
    let src = code;
    if (code.includes(CTRL_A) || code.includes(CTRL_B)) {
      // The raw REPL would take these as commands: pass the source escaped.
      // (Tracebacks then show one more "<stdin>" line than a board's.)
      const lit = [...code].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x27 && b !== 0x5c ? String.fromCharCode(b) : "\\x" + b.toString(16).padStart(2, "0"))).join("");
      src = Buffer.from(`exec(compile(b'${lit}'.decode(), '<stdin>', 'exec'))`, "latin1");
    }
    for (const c of src) this.feed(c);
    this.out.drop = [0x4f, 0x4b];
    const ret = this.feed(CTRL_D);
    this.out.drop = [];
    this.line = [];
    this.silent = true;
    this.out.flush();
    if (ret & FORCED_EXIT) await this.reset();
  }

  async reset() {
    await this.stop();
    await this.start();
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  let root = o.root;
  let tmp = null;
  if (root === null) root = tmp = fs.mkdtempSync(path.join(os.tmpdir(), "crumb-flash-"));
  const board = new Board(o, path.resolve(root));
  await board.start();

  // Input is handled one byte at a time, in order; a soft reset (which loads
  // a new VM) holds the bytes that follow it until the new REPL is up.
  const chunks = [];
  let busy = false;
  let ending = false;
  const finish = async () => {
    if (board.closeNet) await board.closeNet();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    process.exit(0);
  };
  const pump = async () => {
    if (busy) return;
    busy = true;
    while (chunks.length) {
      const chunk = chunks.shift();
      for (const c of chunk) await board.input(c);
    }
    busy = false;
    if (ending) await finish();
  };
  process.stdin.on("data", (d) => {
    chunks.push(d);
    pump();
  });
  process.stdin.on("end", () => {
    ending = true;
    pump();
  });
  // No SIGINT/SIGTERM handlers: a VM busy in a loop never returns to the
  // event loop to run them, and the default action ends the process at once.
}

main().catch((e) => {
  if (e instanceof SetupError) die(e.message);
  process.stderr.write("repl.mjs: " + (e && e.stack ? e.stack : e) + "\n");
  process.exit(2);
});
