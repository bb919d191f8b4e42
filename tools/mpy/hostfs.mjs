// An Emscripten filesystem backed by a host directory, for the MicroPython
// WebAssembly VM.
//
// The npm port is built without Emscripten's NODEFS (its FS only has MEMFS),
// so a directory on the host cannot be mounted with the port's own code.
// This is a small filesystem type of the same shape as MEMFS in the port's
// micropython.mjs (mount/createNode, node_ops, stream_ops), whose operations
// go straight to node:fs. MicroPython's VfsPosix reaches it through the
// port's syscalls (open/read/write/lseek/stat/getdents/mkdir/rename/...), so
// every file the VM writes is a file on the host at once, and the other way
// round: the board's flash, kept across soft resets and inspectable by tests.
//
//   import { mountHostDir } from "./hostfs.mjs";
//   mountHostDir(mp.FS, "/work/flash", "/flash");
//
// Errors are thrown as FS.ErrnoError with the port's (WASI) errno numbers,
// taken from node's error code through the port's ERRNO_CODES table (copied
// below), as the FS core expects (it tests e.g. errno 44 for "no such file").

import fs from "node:fs";
import path from "node:path";

// Emscripten's errno numbers for the codes node:fs raises here (the ERRNO_CODES
// table inside the port's micropython.mjs).
const EM_ERRNO = {
  EPERM: 63, ENOENT: 44, EIO: 29, EBADF: 8, ENOMEM: 48, EACCES: 2, EBUSY: 10, EEXIST: 20,
  EXDEV: 75, ENOTDIR: 54, EISDIR: 31, EINVAL: 28, EMFILE: 33, EFBIG: 22, ENOSPC: 51,
  EROFS: 69, ENAMETOOLONG: 37, ENOTEMPTY: 55, ELOOP: 32,
};

export function createHostFS(FS) {
  const err = (e) => {
    if (e instanceof FS.ErrnoError) return e;
    return new FS.ErrnoError(EM_ERRNO[e && e.code] ?? EM_ERRNO.EIO);
  };
  // Run a node:fs call, turning its error into the port's FS error.
  const host = (f) => {
    try {
      return f();
    } catch (e) {
      throw err(e);
    }
  };

  const realPath = (node) => {
    const parts = [];
    while (node.parent !== node) {
      parts.push(node.name);
      node = node.parent;
    }
    parts.push(node.mount.opts.root);
    return path.join(...parts.reverse());
  };

  const HOSTFS = {
    mount(mount) {
      const st = host(() => fs.statSync(mount.opts.root));
      if (!st.isDirectory()) throw new FS.ErrnoError(EM_ERRNO.ENOTDIR);
      return HOSTFS.createNode(null, "/", st.mode, 0);
    },
    createNode(parent, name, mode, dev) {
      const node = FS.createNode(parent, name, mode, dev);
      node.node_ops = HOSTFS.node_ops;
      node.stream_ops = HOSTFS.stream_ops;
      return node;
    },
    realPath,
    node_ops: {
      getattr(node) {
        const st = host(() => fs.lstatSync(realPath(node)));
        return {
          dev: 1, ino: node.id, mode: st.mode, nlink: st.nlink, uid: 0, gid: 0, rdev: 0,
          size: st.isDirectory() ? 4096 : st.size,
          atime: st.atime, mtime: st.mtime, ctime: st.ctime,
          blksize: 4096, blocks: Math.ceil(st.size / 4096),
        };
      },
      setattr(node, attr) {
        const p = realPath(node);
        if (attr.mode !== undefined && attr.mode !== null) host(() => fs.chmodSync(p, attr.mode & 0o7777));
        if (attr.size !== undefined) host(() => fs.truncateSync(p, attr.size));
        if (attr.atime != null || attr.mtime != null) {
          const st = host(() => fs.lstatSync(p));
          host(() => fs.utimesSync(p, new Date(attr.atime ?? st.atimeMs), new Date(attr.mtime ?? st.mtimeMs)));
        }
      },
      lookup(parent, name) {
        const st = host(() => fs.lstatSync(path.join(realPath(parent), name)));
        return HOSTFS.createNode(parent, name, st.mode, 0);
      },
      mknod(parent, name, mode, dev) {
        const p = path.join(realPath(parent), name);
        if (FS.isDir(mode)) host(() => fs.mkdirSync(p, { mode: mode & 0o777 }));
        else if (FS.isFile(mode)) host(() => fs.writeFileSync(p, "", { flag: "wx", mode: mode & 0o777 }));
        else throw new FS.ErrnoError(EM_ERRNO.EPERM); // no devices, FIFOs or sockets on a board's flash
        return HOSTFS.createNode(parent, name, mode, dev);
      },
      rename(oldNode, newDir, newName) {
        // A node cached for the target it replaces would go stale (MEMFS
        // drops it the same way); the FS core re-links oldNode itself.
        let target = null;
        try {
          target = FS.lookupNode(newDir, newName);
        } catch {
          /* no target */
        }
        host(() => fs.renameSync(realPath(oldNode), path.join(realPath(newDir), newName)));
        if (target && target !== oldNode) FS.hashRemoveNode(target);
        oldNode.name = newName;
      },
      unlink(parent, name) {
        host(() => fs.unlinkSync(path.join(realPath(parent), name)));
      },
      rmdir(parent, name) {
        host(() => fs.rmdirSync(path.join(realPath(parent), name)));
      },
      readdir(node) {
        return [".", "..", ...host(() => fs.readdirSync(realPath(node)))];
      },
      symlink() {
        throw new FS.ErrnoError(EM_ERRNO.EPERM); // littlefs and FAT have no links
      },
      readlink() {
        throw new FS.ErrnoError(EM_ERRNO.EINVAL);
      },
      statfs(root) {
        const s = host(() => fs.statfsSync(root));
        return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail,
                 files: s.files, ffree: s.ffree, namelen: 255 };
      },
    },
    stream_ops: {
      // One host file descriptor per open stream: pread/pwrite at the
      // stream's position (the FS core keeps the position and handles
      // O_APPEND by seeking to the end first).
      open(stream) {
        if (!FS.isFile(stream.node.mode)) return;
        const writable = (stream.flags & 3) !== 0;
        stream.hostfd = host(() => fs.openSync(realPath(stream.node), writable ? "r+" : "r"));
      },
      close(stream) {
        if (stream.hostfd !== undefined) {
          host(() => fs.closeSync(stream.hostfd));
          stream.hostfd = undefined;
        }
      },
      dup() {
        // the port never dups; sharing one host fd between two streams would
        // close it twice
        throw new FS.ErrnoError(EM_ERRNO.EPERM);
      },
      read(stream, buffer, offset, length, position) {
        if (length === 0) return 0;
        return host(() => fs.readSync(stream.hostfd, buffer, offset, length, position));
      },
      write(stream, buffer, offset, length, position) {
        if (length === 0) return 0;
        return host(() => fs.writeSync(stream.hostfd, buffer, offset, length, position));
      },
      llseek(stream, offset, whence) {
        let pos = offset;
        if (whence === 1) pos += stream.position;
        else if (whence === 2 && FS.isFile(stream.node.mode)) pos += host(() => fs.fstatSync(stream.hostfd)).size;
        if (pos < 0) throw new FS.ErrnoError(EM_ERRNO.EINVAL);
        return pos;
      },
    },
  };
  return HOSTFS;
}

// Mount host directory `root` at `mountpoint` of the VM's Emscripten FS.
//
// The FS core caches looked-up nodes by name; a file removed or replaced on
// the host behind the VM's back would keep a stale node. FS.lookupNode (which
// every path walk calls) is wrapped so a cached node of this mount is
// re-checked against the host and dropped when its type changed or it is gone.
export function mountHostDir(FS, root, mountpoint) {
  const HOSTFS = createHostFS(FS);
  FS.mkdirTree(mountpoint);
  FS.mount(HOSTFS, { root: path.resolve(root) }, mountpoint);
  const lookupNode = FS.lookupNode;
  FS.lookupNode = (parent, name) => {
    const node = lookupNode(parent, name);
    if (node.node_ops !== HOSTFS.node_ops || node.parent === node) return node;
    let st = null;
    try {
      st = fs.lstatSync(HOSTFS.realPath(node));
    } catch {
      /* gone */
    }
    if (st && (st.mode & 0o170000) === (node.mode & 0o170000)) return node;
    FS.destroyNode(node);
    return lookupNode(parent, name);
  };
  return HOSTFS;
}

// WASI errno (the port's libc and FS; ERRNO_CODES in micropython.mjs) ->
// the POSIX number a board's filesystem raises: littlefs's errors are the
// negated POSIX codes (lib/littlefs/lfs2.h) and extmod/vfs_lfsx.c raises
// OSError(-err); MicroPython's own numbers (py/mperrno.h) are the same.
const BOARD_ERRNO = {
  [EM_ERRNO.EPERM]: 1, [EM_ERRNO.ENOENT]: 2, [EM_ERRNO.EIO]: 5, [EM_ERRNO.EBADF]: 9, [EM_ERRNO.ENOMEM]: 12,
  [EM_ERRNO.EACCES]: 13, [EM_ERRNO.EBUSY]: 16, [EM_ERRNO.EEXIST]: 17, [EM_ERRNO.EXDEV]: 18,
  [EM_ERRNO.ENOTDIR]: 20, [EM_ERRNO.EISDIR]: 21, [EM_ERRNO.EINVAL]: 22, [EM_ERRNO.EMFILE]: 24,
  [EM_ERRNO.EFBIG]: 27, [EM_ERRNO.ENOSPC]: 28, [EM_ERRNO.EROFS]: 30, [EM_ERRNO.ENAMETOOLONG]: 36,
  [EM_ERRNO.ENOTEMPTY]: 39, [EM_ERRNO.ELOOP]: 40,
};

// The FS functions the port's syscalls call (the __syscall_* and fd_*
// functions in micropython.mjs): an error leaving the outermost of them is
// renumbered for MicroPython, which raises OSError(errno) with the number
// the syscall returned (extmod/vfs_posix.c). Inner calls keep the FS's own
// numbers, which the FS core tests (e.g. 20 in mkdirTree, 44 in lookupPath).
const SYSCALL_FS = ["open", "close", "read", "write", "llseek", "stat", "lstat", "fstat", "mkdir", "rmdir",
                    "unlink", "rename", "readdir", "chdir", "statfs"];

// From now on, the VM sees a board's errno numbers. Call after set-up.
export function useBoardErrno(FS) {
  let depth = 0;
  for (const name of SYSCALL_FS) {
    const f = FS[name];
    FS[name] = function (...args) {
      depth++;
      try {
        return f.apply(this, args);
      } catch (e) {
        if (depth === 1 && e instanceof FS.ErrnoError && BOARD_ERRNO[e.errno] !== undefined) {
          throw new FS.ErrnoError(BOARD_ERRNO[e.errno]);
        }
        throw e;
      } finally {
        depth--;
      }
    };
  }
}
