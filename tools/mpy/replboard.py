# MicroPython code run by tools/mpy/repl.mjs inside the WebAssembly VM at
# each (re)start, before the REPL: what a board's firmware and its frozen
# _boot.py do before boot.py (ports/rp2/main.c, ports/rp2/modules/_boot.py).
#
# * `socket` and `tls`: built into a board's firmware; here the bridge's
#   modules (tools/mpy/vmlib, written by repl.mjs to /vmlib, outside the
#   board's filesystem) are imported once, so `import socket` finds them in
#   sys.modules without them being files on the "flash".
# * The filesystem: rp2's _boot.py mounts a littlefs volume at "/". Here the
#   flash is a host directory (hostfs.mjs, at /flash in the port's Emscripten
#   FS) seen through the port's VfsPosix, wrapped in FlashVfs so that only
#   /flash is reachable and it is "/", and results have littlefs's shape
#   (extmod/vfs_lfsx.c): stat() gives the file type alone as st_mode,
#   ilistdir() gives (name, type, 0, size), open() of a directory raises
#   EISDIR. Error numbers are a board's already (hostfs.mjs, useBoardErrno).
# * sys.modules: what this set-up imported is forgotten, but for socket and
#   tls (a board's sys.modules starts empty; built-in modules never appear).
#
# It defines one function in __main__, _crumb_pyexec (boot.py/main.py as
# shared/runtime/pyexec.c's pyexec_file_if_exists runs them); repl.mjs
# deletes it before the REPL starts.


def _crumb_board():
    import io
    import os
    import sys

    import vfs

    sys.path.insert(0, "/vmlib")
    try:
        import socket  # noqa: F401

        import tls  # noqa: F401
    finally:
        sys.path.pop(0)

    class FlashVfs:
        # The methods a VFS object has for MicroPython's VFS layer
        # (extmod/vfs.c proxies to them), as VfsLfs2 implements them.
        def __repr__(self):
            return "<FlashVfs>"

        def __init__(self, posix):
            self._p = posix
            self._cwd = "/"

        def _abs(self, path):
            # Normalised absolute path inside the flash: ".." stops at "/".
            parts = []
            for p in (path if path.startswith("/") else self._cwd + path).split("/"):
                if p == "..":
                    if parts:
                        parts.pop()
                elif p and p != ".":
                    parts.append(p)
            return "/" + "/".join(parts)

        def mount(self, readonly, mkfs):
            pass

        def umount(self):
            pass

        def chdir(self, path):
            p = self._abs(path)
            if not self._p.stat(p)[0] & 0x4000:
                raise OSError(20)  # ENOTDIR
            self._cwd = p.rstrip("/") + "/"

        def getcwd(self):
            return "/" if self._cwd == "/" else self._cwd[:-1]

        def ilistdir(self, path):
            p = self._abs(path)
            for ent in self._p.ilistdir(p):
                name, typ = ent[0], ent[1]
                size = 0 if typ == 0x4000 else self._p.stat(p.rstrip("/") + "/" + name)[6]
                yield (name, typ, 0, size)

        def stat(self, path):
            st = self._p.stat(self._abs(path))
            mtime = st[8]
            return (st[0] & 0xF000, 0, 0, 0, 0, 0, st[6], mtime, mtime, mtime)

        def statvfs(self, path):
            return self._p.statvfs(self._abs(path))

        def open(self, path, mode):
            # lfs_file_open() refuses a directory with LFS_ERR_ISDIR; the
            # port's open() would succeed and fail at the first read.
            p = self._abs(path)
            try:
                isdir = self._p.stat(p)[0] & 0x4000
            except OSError:
                isdir = False
            if isdir:
                raise OSError(21)  # EISDIR
            return self._p.open(p, mode)

        def mkdir(self, path):
            self._p.mkdir(self._abs(path))

        def rmdir(self, path):
            self._p.rmdir(self._abs(path))

        def remove(self, path):
            self._p.remove(self._abs(path))

        def rename(self, old, new):
            self._p.rename(self._abs(old), self._abs(new))

    vfs.umount("/")
    vfs.mount(FlashVfs(vfs.VfsPosix("/flash")), "/")
    os.chdir("/")

    def pyexec(path):
        # pyexec_file_if_exists(path) (shared/runtime/pyexec.c): 1 when the
        # file is missing or ran, 0 after an uncaught exception (traceback
        # printed), 0x100 (PYEXEC_FORCED_EXIT) on SystemExit. It runs in
        # __main__'s globals with __file__ set, as parse_compile_execute does
        # for file input.
        try:
            if os.stat(path)[0] & 0x4000:
                return 1
        except OSError:
            return 1
        g = globals()
        try:
            with open(path) as f:
                src = f.read()
            g["__file__"] = path
            exec(compile(src, path, "exec"), g)
            return 1
        except SystemExit:
            return 0x100
        except BaseException as e:
            buf = io.StringIO()
            sys.print_exception(e, buf)
            lines = buf.getvalue().split("\n")
            # The first frame is this function's (the exception passed
            # through it); a board's traceback starts at the file's own code.
            if len(lines) > 1 and lines[0].startswith("Traceback") and lines[1].startswith('  File "<stdin>"'):
                del lines[1]
            # pyexec prints with mp_plat_print, whose "\n" is sent as "\r\n"
            sys.stdout.write("\r\n".join(lines))
            return 0

    globals()["_crumb_pyexec"] = pyexec
    for name in list(sys.modules):
        if name not in ("socket", "tls"):
            del sys.modules[name]


_crumb_board()
del _crumb_board
