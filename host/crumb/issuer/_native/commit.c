/* crumb.issuer._native._commit: the issuer's audit writer, without the GIL.
 *
 * The issuer's event loop holds the GIL for all of its request handling. Its
 * audit writer signs a batch of tokens, hash-chains the batch's records and
 * appends them to SQLite. Written in Python, that thread needs the GIL between
 * every step, and each time waits for the busy loop to let go of it (up to
 * the switch interval), so commits were slow and the loop idled waiting for
 * them. Here the writer's whole life runs with the GIL released: the loop
 * submits jobs and collects results (both short, with the GIL), and is told
 * through an eventfd that results are ready. Signing then runs on the
 * machine's other core while the loop serves requests.
 *
 * No cryptography of its own: Ed25519 signatures (crypto_sign_detached) and
 * SHA-256 (crypto_hash_sha256) are libsodium's, and the log is written
 * through SQLite's C API; both are linked by the build (setup.py), from
 * their own headers. The loader (__init__.py) runs it only when its SQLite
 * is the very library Python's sqlite3 module uses (same_sqlite below): two
 * copies of SQLite in one process break each other's POSIX locks.
 *
 * Secret keys: each job holds a copy of the signing key (libsodium's 64-byte
 * form); it is wiped with sodium_memzero as soon as the job's signatures are
 * made, and again whenever a job is freed, on every path.
 *
 * A record's hash is SHA-256(previous hash || be64(seq) || body), as
 * crumb.issuer.audit.record_hash.
 */
#define _GNU_SOURCE /* dladdr */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#define SIG_BYTES crypto_sign_BYTES
#define HASH_BYTES crypto_hash_sha256_BYTES
#define SK_BYTES crypto_sign_SECRETKEYBYTES
#define MAX_ITEMS 65536
#define MAX_ITEM_BYTES (1 << 20)
#define GROUP_RECORDS 1024  /* records per transaction when jobs queue up */

typedef struct job {
    struct job *next;
    long long id;
    int has_key;
    unsigned char sk[SK_BYTES];
    Py_ssize_t n_msgs, n_bodies;
    unsigned char **msgs, **bodies;
    size_t *msg_len, *body_len;
    unsigned char *sigs;
    long long first_seq;
    long long group;    /* the transaction it was committed in: jobs of one group share it */
    int failed;
    char error[256];
    char *rotate;       /* a rotation, not records: the path of the segment to switch to */
    char *schema;       /* ...and the SQL that creates its table (audit.SCHEMA: one definition) */
} job;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    job *todo, *todo_tail, *done, *done_tail;
    int stop, serving, efd;
    sqlite3 *db;
    sqlite3_stmt *insert;
    int head_valid;
    int full_sync;
    char *path;         /* the segment appended to (w->db's file), to reopen it after a failure */
    int poisoned;       /* a commit failed: w->db is closed and reopened before the next one */
    int probe_fd;       /* the chain's probe file (see commit_doubt), -1 if not open */
    int probe_size;
    long long groups;   /* transactions attempted so far */
    long long head_seq;
    unsigned char head_hash[HASH_BYTES];
} writer;

/* Frees a job on every path (submitted, failed, collected, or dropped with its
 * writer), wiping its copy of the secret key first. */
static void job_free(job *j) {
    if (!j) return;
    sodium_memzero(j->sk, sizeof j->sk);
    if (j->msgs) for (Py_ssize_t i = 0; i < j->n_msgs; i++) PyMem_RawFree(j->msgs[i]);
    if (j->bodies) for (Py_ssize_t i = 0; i < j->n_bodies; i++) PyMem_RawFree(j->bodies[i]);
    PyMem_RawFree(j->msgs);
    PyMem_RawFree(j->bodies);
    PyMem_RawFree(j->msg_len);
    PyMem_RawFree(j->body_len);
    PyMem_RawFree(j->sigs);
    PyMem_RawFree(j->rotate);
    PyMem_RawFree(j->schema);
    PyMem_RawFree(j);
}

static void writer_destroy(PyObject *capsule) {
    writer *w = PyCapsule_GetPointer(capsule, "crumb.issuer._native._commit.writer");
    if (!w) return;
    for (job *j = w->todo; j;) { job *n = j->next; job_free(j); j = n; }
    for (job *j = w->done; j;) { job *n = j->next; job_free(j); j = n; }
    if (w->insert) sqlite3_finalize(w->insert);
    if (w->db) sqlite3_close(w->db);
    if (w->probe_fd >= 0) close(w->probe_fd);
    PyMem_RawFree(w->path);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->ready);
    PyMem_RawFree(w);
}

static writer *get_writer(PyObject *capsule) {
    return PyCapsule_GetPointer(capsule, "crumb.issuer._native._commit.writer");
}

/* Opens one segment for appending (WAL, the synchronous mode asked, the insert
 * prepared): 0, or -1 with nothing left open and why in ``why``. Runs with or
 * without the GIL (SQLite only). */
static int open_segment(const char *path, int full_sync, const char *schema, sqlite3 **db, sqlite3_stmt **insert,
                        char *why, size_t why_len) {
    *db = NULL;
    *insert = NULL;
    const char *pragma = full_sync ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                   : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(*db, 30000) != SQLITE_OK ||
        sqlite3_exec(*db, pragma, NULL, NULL, NULL) != SQLITE_OK ||
        (schema && sqlite3_exec(*db, schema, NULL, NULL, NULL) != SQLITE_OK) ||
        sqlite3_prepare_v2(*db, "INSERT INTO audit (seq, body, prev, hash) VALUES (?,?,?,?)", -1, insert,
                           NULL) != SQLITE_OK) {
        snprintf(why, why_len, "%s", *db ? sqlite3_errmsg(*db) : "out of memory");
        if (*insert) sqlite3_finalize(*insert);
        if (*db) sqlite3_close(*db);
        *db = NULL;
        *insert = NULL;
        return -1;
    }
    return 0;
}

static char *copy_text(const char *text);

/* writer_new(path, synchronous, efd, head_seq, head_hash, probe_path) -> writer */
static PyObject *writer_new(PyObject *self, PyObject *args) {
    const char *path, *sync, *probe;
    int efd;
    long long head_seq;
    Py_buffer head;
    if (!PyArg_ParseTuple(args, "ssiLy*s:writer_new", &path, &sync, &efd, &head_seq, &head, &probe))
        return NULL;
    if (head.len != HASH_BYTES || (strcmp(sync, "FULL") && strcmp(sync, "NORMAL"))) {
        PyBuffer_Release(&head);
        PyErr_SetString(PyExc_ValueError, "head_hash is 32 bytes and synchronous is FULL or NORMAL");
        return NULL;
    }
    writer *w = PyMem_RawCalloc(1, sizeof(writer));
    if (!w) {
        PyBuffer_Release(&head);
        return PyErr_NoMemory();
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->ready, NULL);
    w->probe_fd = -1;
    w->efd = efd;
    w->head_valid = 1;
    w->head_seq = head_seq;
    memcpy(w->head_hash, head.buf, HASH_BYTES);
    PyBuffer_Release(&head);
    PyObject *capsule = PyCapsule_New(w, "crumb.issuer._native._commit.writer", writer_destroy);
    if (!capsule) {
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->ready);
        PyMem_RawFree(w);
        return NULL;
    }
    w->full_sync = strcmp(sync, "FULL") == 0;
    if (!(w->path = copy_text(path))) {
        Py_DECREF(capsule);
        return PyErr_NoMemory();
    }
    /* Opened here, at start, so a probe that cannot be made fails the start, not each request. */
    if ((w->probe_fd = open(probe, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
        PyErr_Format(PyExc_OSError, "the audit log's probe file %s cannot be opened: %s", probe, strerror(errno));
        Py_DECREF(capsule);
        return NULL;
    }
    char why[200];
    if (open_segment(path, w->full_sync, NULL, &w->db, &w->insert, why, sizeof why) != 0) {
        PyErr_Format(PyExc_OSError, "the audit log %s cannot be opened for writing: %s", path, why);
        Py_DECREF(capsule);
        return NULL;
    }
    return capsule;
}

static unsigned char *copy_bytes(PyObject *item, size_t *len) {
    *len = (size_t)PyBytes_GET_SIZE(item);
    unsigned char *out = PyMem_RawMalloc(*len ? *len : 1);
    if (out) memcpy(out, PyBytes_AS_STRING(item), *len);
    return out;
}

/* Copy a list of bytes into C memory (count goes up as items land, for job_free):
 * 0, -1 if an item is not bytes or too long, -2 if out of memory. */
static int copy_list(PyObject *list, unsigned char **out, size_t *len, Py_ssize_t *count) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) > MAX_ITEM_BYTES) return -1;
        *count = i + 1;
        if (!(out[i] = copy_bytes(item, &len[i]))) return -2;
    }
    return 0;
}

/* writer_submit(writer, job_id, secret_key or None, messages, bodies) */
/* Hands a job to the writer thread, in queue order (batches and rotations alike); a
 * stopped writer takes nothing, and the job is freed. */
static PyObject *enqueue(writer *w, job *j) {
    pthread_mutex_lock(&w->lock);
    if (w->stop) {
        pthread_mutex_unlock(&w->lock);
        job_free(j);
        PyErr_SetString(PyExc_RuntimeError, "the audit writer is stopped");
        return NULL;
    }
    if (w->todo_tail) w->todo_tail->next = j;
    else w->todo = j;
    w->todo_tail = j;
    pthread_cond_signal(&w->ready);
    pthread_mutex_unlock(&w->lock);
    Py_RETURN_NONE;
}

static PyObject *writer_submit(PyObject *self, PyObject *args) {
    PyObject *capsule, *key, *messages, *bodies;
    long long id;
    if (!PyArg_ParseTuple(args, "OLOO!O!:writer_submit", &capsule, &id, &key, &PyList_Type, &messages,
                          &PyList_Type, &bodies))
        return NULL;
    writer *w = get_writer(capsule);
    if (!w) return NULL;
    if (key != Py_None && (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != SK_BYTES)) {
        PyErr_SetString(PyExc_ValueError, "the secret key must be 64 bytes (libsodium form) or None");
        return NULL;
    }
    Py_ssize_t nm = PyList_GET_SIZE(messages), nb = PyList_GET_SIZE(bodies);
    if (nm > MAX_ITEMS || nb > MAX_ITEMS || (nm && key == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "too many items, or messages without a key");
        return NULL;
    }
    job *j = PyMem_RawCalloc(1, sizeof(job));
    if (!j) return PyErr_NoMemory();
    j->id = id;
    j->has_key = key != Py_None;
    if (j->has_key) memcpy(j->sk, PyBytes_AS_STRING(key), SK_BYTES);
    j->msgs = PyMem_RawCalloc(nm ? nm : 1, sizeof(unsigned char *));
    j->msg_len = PyMem_RawCalloc(nm ? nm : 1, sizeof(size_t));
    j->bodies = PyMem_RawCalloc(nb ? nb : 1, sizeof(unsigned char *));
    j->body_len = PyMem_RawCalloc(nb ? nb : 1, sizeof(size_t));
    j->sigs = PyMem_RawCalloc(nm ? nm : 1, SIG_BYTES);
    if (!j->msgs || !j->msg_len || !j->bodies || !j->body_len || !j->sigs) goto nomem;
    int rc = copy_list(messages, j->msgs, j->msg_len, &j->n_msgs);
    if (rc == 0) rc = copy_list(bodies, j->bodies, j->body_len, &j->n_bodies);
    if (rc == -1) goto badtype;
    if (rc == -2) goto nomem;
    return enqueue(w, j);
badtype:
    job_free(j);
    PyErr_Format(PyExc_TypeError, "messages and bodies are lists of bytes of at most %d bytes", MAX_ITEM_BYTES);
    return NULL;
nomem:
    job_free(j);
    return PyErr_NoMemory();
}

static void fail_job(writer *w, job *j, const char *why) {
    j->failed = 1;
    snprintf(j->error, sizeof j->error, "%s", why);
}

/* Runs without the GIL: the signatures of one job; on failure the job fails alone.
 * The job's key is wiped as soon as it is no longer needed. */
static void sign_job(writer *w, job *j) {
    for (Py_ssize_t i = 0; i < j->n_msgs; i++) {
        if (crypto_sign_detached(j->sigs + i * SIG_BYTES, NULL, j->msgs[i], (unsigned long long)j->msg_len[i],
                                 j->sk) != 0) {
            fail_job(w, j, "libsodium failed to sign");
            break;
        }
    }
    sodium_memzero(j->sk, sizeof j->sk);
}

/* Whether a commit SQLite reported done can be trusted: NULL if so, else why not. The same
 * check as audit.commit_doubt (see there for the evidence); run after every COMMIT that
 * returned SQLITE_OK, before any token of the group is released.
 *
 * An ext4 file system that hits an error with errors=remount-ro aborts its journal first and
 * only some milliseconds later sets its "emergency read-only" flag (never SB_RDONLY, so
 * statvfs shows no ST_RDONLY). An fdatasync that started before the flag was set can return
 * 0 although the journal transaction holding the WAL's new size and extents was aborted, not
 * committed: SQLite's COMMIT then says done and the frames are gone at the next mount. The
 * probe is a metadata change that must start a journal handle (the probe file's size goes
 * 0 <-> 1), which ext4 refuses with EROFS once the journal is aborted; the abort is always set
 * before such an fdatasync returns, so a probe made after it sees it. The statvfs check
 * catches a file system remounted read-only the ordinary way, and a segment file deleted
 * under the writer (statvfs fails). */
#define READ_ONLY_WHY \
    "the file system under the audit log turned read-only (or the segment file is gone): the commit cannot be trusted"
static const char *commit_doubt(writer *w, char *buf, size_t len) {
    struct statvfs st;
    if (statvfs(w->path, &st) != 0 || (st.f_flag & ST_RDONLY)) return READ_ONLY_WHY;
    w->probe_size ^= 1;
    if (w->probe_fd < 0 || ftruncate(w->probe_fd, w->probe_size) != 0) {
        snprintf(buf, len, "the file system under the audit log stopped taking writes (probe: %s): "
                 "the commit cannot be trusted", w->probe_fd < 0 ? "not open" : strerror(errno));
        return buf;
    }
    return NULL;
}

/* A writer poisoned by a failed commit gets a fresh connection to its segment before it commits
 * again: nothing of the failed transaction's state (page cache, WAL index as that connection
 * saw it) carries over. The chain's head is re-read from the file by the owner meanwhile
 * (head_valid). 0, or -1 with why in ``why``. */
static int reopen(writer *w, char *why, size_t len) {
    if (w->insert) sqlite3_finalize(w->insert);
    if (w->db) sqlite3_close(w->db);
    w->db = NULL;
    w->insert = NULL;
    if (open_segment(w->path, w->full_sync, NULL, &w->db, &w->insert, why, len) != 0) return -1;
    w->poisoned = 0;
    return 0;
}

static void fail_group(writer *w, job *group, const char *why) {
    for (job *j = group; j; j = j->next)
        if (!j->failed) fail_job(w, j, why);
}

/* Runs without the GIL. The records of every job in ``group`` that signed
 * are appended in one transaction (group commit: one fsync for all the jobs
 * that queued up during the previous commit). On any failure none of them
 * is kept and the head is unknown until the owner re-reads it
 * (writer_set_head): a second writer is never forked. */
static void commit_group(writer *w, job *group) {
    pthread_mutex_lock(&w->lock);
    int valid = w->head_valid;
    long long seq = w->head_seq;
    unsigned char prev[HASH_BYTES], hash[HASH_BYTES];
    memcpy(prev, w->head_hash, HASH_BYTES);
    pthread_mutex_unlock(&w->lock);
    Py_ssize_t records = 0;
    for (job *j = group; j; j = j->next)
        if (!j->failed) records += j->n_bodies;
    if (records == 0) return;
    if (!valid) { fail_group(w, group, "the log's head is being re-read after a failed commit"); return; }
    char why[256];
    if (w->poisoned && reopen(w, why, sizeof why) != 0) {
        fail_group(w, group, why);
        goto invalid;
    }
    if (sqlite3_exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) goto sqlfail;
    for (job *j = group; j; j = j->next) {
        if (j->failed) continue;
        j->first_seq = seq + 1;
        for (Py_ssize_t i = 0; i < j->n_bodies; i++) {
            seq++;
            unsigned char be_seq[8];
            for (int k = 0; k < 8; k++) be_seq[k] = (unsigned char)((unsigned long long)seq >> (56 - 8 * k));
            crypto_hash_sha256_state st;
            int rc = crypto_hash_sha256_init(&st) | crypto_hash_sha256_update(&st, prev, HASH_BYTES) |
                     crypto_hash_sha256_update(&st, be_seq, sizeof be_seq) |
                     crypto_hash_sha256_update(&st, j->bodies[i], (unsigned long long)j->body_len[i]) |
                     crypto_hash_sha256_final(&st, hash);
            if (rc != 0 || sqlite3_bind_int64(w->insert, 1, seq) != SQLITE_OK ||
                sqlite3_bind_blob(w->insert, 2, j->bodies[i], (int)j->body_len[i], SQLITE_STATIC) != SQLITE_OK ||
                sqlite3_bind_blob(w->insert, 3, prev, HASH_BYTES, SQLITE_STATIC) != SQLITE_OK ||
                sqlite3_bind_blob(w->insert, 4, hash, HASH_BYTES, SQLITE_STATIC) != SQLITE_OK ||
                sqlite3_step(w->insert) != SQLITE_DONE) {
                sqlite3_reset(w->insert);
                goto sqlfail_rollback;
            }
            sqlite3_reset(w->insert);
            memcpy(prev, hash, HASH_BYTES);
        }
    }
    if (sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto sqlfail_rollback;
    const char *doubt = commit_doubt(w, why, sizeof why);
    if (doubt) {
        fail_group(w, group, doubt);
        goto invalid;
    }
    pthread_mutex_lock(&w->lock);
    w->head_seq = seq;
    memcpy(w->head_hash, prev, HASH_BYTES);
    pthread_mutex_unlock(&w->lock);
    return;
sqlfail_rollback:
    fail_group(w, group, sqlite3_errmsg(w->db));
    sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    goto invalid;
sqlfail:
    fail_group(w, group, sqlite3_errmsg(w->db));
invalid:
    /* Poisoned: refuse until the owner has re-read the head and the connection is fresh. */
    w->poisoned = 1;
    pthread_mutex_lock(&w->lock);
    w->head_valid = 0;
    pthread_mutex_unlock(&w->lock);
}

/* Runs without the GIL: the writer moves to the segment the job names (creating
 * it with the job's schema SQL) after every job queued before it. The chain's
 * head carries over, so the new segment's first record links to this one's
 * last. If the new segment cannot be opened the writer keeps the current one
 * and the job fails, saying why. The closed segment is checkpointed into its
 * main file (best effort: a reader may hold its WAL) and closed. */
static void rotate_job(writer *w, job *j) {
    sqlite3 *db;
    sqlite3_stmt *insert;
    char why[200];
    /* Made under a temporary name and renamed into place, as audit.create_segment does: no
     * reader ever sees the segment without its table. A file already there is whole. */
    if (access(j->rotate, F_OK) != 0) {
        size_t len = strlen(j->rotate);
        char *tmp = PyMem_RawMalloc(len + 16);
        if (!tmp) { fail_job(w, j, "out of memory"); return; }
        static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
        for (int i = 0; i < 4; i++) {
            snprintf(tmp, len + 16, "%s.new%s", j->rotate, suffixes[i]);
            unlink(tmp);  /* left by a crash */
        }
        snprintf(tmp, len + 16, "%s.new", j->rotate);
        int made = open_segment(tmp, w->full_sync, j->schema, &db, &insert, why, sizeof why) == 0;
        if (made) {
            sqlite3_finalize(insert);
            made = sqlite3_close(db) == SQLITE_OK;
            if (!made) snprintf(why, sizeof why, "the new segment could not be closed");
        }
        if (made && rename(tmp, j->rotate) != 0) {
            made = 0;
            snprintf(why, sizeof why, "rename: %s", strerror(errno));
        }
        PyMem_RawFree(tmp);
        if (!made) { fail_job(w, j, why); return; }
    }
    if (open_segment(j->rotate, w->full_sync, NULL, &db, &insert, why, sizeof why) != 0) {
        fail_job(w, j, why);
        return;
    }
    char *path = copy_text(j->rotate);
    if (!path) {
        sqlite3_finalize(insert);
        sqlite3_close(db);
        fail_job(w, j, "out of memory");
        return;
    }
    if (w->insert) sqlite3_finalize(w->insert);
    if (w->db) {  /* NULL when a poisoned writer could not reopen it */
        sqlite3_exec(w->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
        sqlite3_close(w->db);
    }
    w->db = db;
    w->insert = insert;
    PyMem_RawFree(w->path);
    w->path = path;
    w->poisoned = 0;  /* a fresh connection; the head is still re-read if a commit failed */
}

/* writer_serve(writer): the writer thread's body; returns after writer_stop, once the queue is empty.
 * Each turn takes every job queued (up to GROUP_RECORDS records), so the number of
 * commits per second falls as the load rises instead of queueing one fsync per job. */
static PyObject *writer_serve(PyObject *self, PyObject *capsule) {
    writer *w = get_writer(capsule);
    if (!w) return NULL;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&w->lock);
    w->serving = 1;
    for (;;) {
        while (!w->todo && !w->stop) pthread_cond_wait(&w->ready, &w->lock);
        if (!w->todo) break;
        job *group = w->todo, *last = group;
        Py_ssize_t records = group->n_bodies;
        /* A rotation is a group of its own: what came before it is committed first. */
        while (!group->rotate && last->next && !last->next->rotate &&
               records + last->next->n_bodies <= GROUP_RECORDS) {
            last = last->next;
            records += last->n_bodies;
        }
        w->todo = last->next;
        if (!w->todo) w->todo_tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->lock);
        long long number = ++w->groups;  /* only this thread writes it */
        if (group->rotate) {
            group->group = number;
            rotate_job(w, group);
        } else {
            for (job *j = group; j; j = j->next) {
                j->group = number;
                sign_job(w, j);
            }
            commit_group(w, group);
        }
        pthread_mutex_lock(&w->lock);
        if (w->done_tail) w->done_tail->next = group;
        else w->done = group;
        w->done_tail = last;
        pthread_mutex_unlock(&w->lock);
        uint64_t one = 1;
        while (write(w->efd, &one, sizeof one) < 0 && errno == EINTR) {}
        pthread_mutex_lock(&w->lock);
    }
    w->serving = 0;
    pthread_mutex_unlock(&w->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static char *copy_text(const char *text) {
    size_t len = strlen(text);
    char *out = PyMem_RawMalloc(len + 1);
    if (out) memcpy(out, text, len + 1);
    return out;
}

/* writer_rotate(writer, job_id, path, schema): queue a switch to the segment at path, created with
 * the schema SQL if new (see rotate_job). */
static PyObject *writer_rotate(PyObject *self, PyObject *args) {
    PyObject *capsule;
    long long id;
    const char *path, *schema;
    if (!PyArg_ParseTuple(args, "OLss:writer_rotate", &capsule, &id, &path, &schema)) return NULL;
    writer *w = get_writer(capsule);
    if (!w) return NULL;
    job *j = PyMem_RawCalloc(1, sizeof(job));
    if (!j || !(j->rotate = copy_text(path)) || !(j->schema = copy_text(schema))) {
        job_free(j);
        return PyErr_NoMemory();
    }
    j->id = id;
    return enqueue(w, j);
}

static PyObject *writer_stop(PyObject *self, PyObject *capsule) {
    writer *w = get_writer(capsule);
    if (!w) return NULL;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_signal(&w->ready);
    pthread_mutex_unlock(&w->lock);
    Py_RETURN_NONE;
}

/* writer_collect(writer) -> [(job_id, first_seq, signatures, error or None, group), ...] in completion order */
static PyObject *writer_collect(PyObject *self, PyObject *capsule) {
    writer *w = get_writer(capsule);
    if (!w) return NULL;
    pthread_mutex_lock(&w->lock);
    job *j = w->done;
    w->done = w->done_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    PyObject *out = PyList_New(0);
    for (; j;) {
        job *next = j->next;
        PyObject *item = NULL;
        if (out) {
            PyObject *sigs = PyList_New(j->failed ? 0 : j->n_msgs);
            if (sigs && !j->failed) {
                for (Py_ssize_t i = 0; i < j->n_msgs; i++) {
                    PyObject *b = PyBytes_FromStringAndSize((const char *)j->sigs + i * SIG_BYTES, SIG_BYTES);
                    if (!b) { Py_CLEAR(sigs); break; }
                    PyList_SET_ITEM(sigs, i, b);
                }
            }
            if (sigs) {
                if (j->failed) {
                    PyObject *why = PyUnicode_DecodeUTF8(j->error, (Py_ssize_t)strlen(j->error), "replace");
                    item = why ? Py_BuildValue("(LLNNL)", j->id, -1LL, sigs, why, j->group) : NULL;
                    if (!why) Py_DECREF(sigs);
                } else {
                    item = Py_BuildValue("(LLNOL)", j->id, j->first_seq, sigs, Py_None, j->group);
                }
            }
            if (!item || PyList_Append(out, item) < 0) Py_CLEAR(out);
            Py_XDECREF(item);
        }
        job_free(j);
        j = next;
    }
    return out;
}

static PyObject *writer_set_head(PyObject *self, PyObject *args) {
    PyObject *capsule;
    long long seq;
    Py_buffer hash;
    if (!PyArg_ParseTuple(args, "OLy*:writer_set_head", &capsule, &seq, &hash)) return NULL;
    writer *w = get_writer(capsule);
    if (!w || hash.len != HASH_BYTES) {
        PyBuffer_Release(&hash);
        if (w) PyErr_SetString(PyExc_ValueError, "the head hash is 32 bytes");
        return NULL;
    }
    pthread_mutex_lock(&w->lock);
    w->head_seq = seq;
    memcpy(w->head_hash, hash.buf, HASH_BYTES);
    w->head_valid = 1;
    pthread_mutex_unlock(&w->lock);
    PyBuffer_Release(&hash);
    Py_RETURN_NONE;
}

/* same_sqlite(path of Python's sqlite3 extension module, or None) -> (same, our SQLite, its SQLite or None)
 *
 * Whether Python's sqlite3 module and this extension call into one and the
 * same loaded SQLite library: that module's sqlite3_libversion (looked up
 * through its own shared object and the libraries it needs) must be ours,
 * address for address. Equal addresses mean one copy of SQLite, whatever
 * the file names; a module with SQLite built in, or one that cannot be
 * opened, is "not the same". The paths come from dladdr(), for messages. */
static PyObject *same_sqlite(PyObject *self, PyObject *arg) {
    void *ours = (void *)&sqlite3_libversion, *theirs = NULL;
    if (arg != Py_None) {
        PyObject *bytes = NULL;
        if (!PyUnicode_FSConverter(arg, &bytes)) return NULL;
        void *handle = dlopen(PyBytes_AS_STRING(bytes), RTLD_LAZY | RTLD_NOLOAD);
        Py_DECREF(bytes);
        if (handle) {
            theirs = dlsym(handle, "sqlite3_libversion");
            dlclose(handle);
        }
    }
    Dl_info info;
    const char *our_file = dladdr(ours, &info) && info.dli_fname ? info.dli_fname : "?";
    PyObject *our_path = PyUnicode_DecodeFSDefault(our_file);
    if (!our_path) return NULL;
    PyObject *their_path = theirs && dladdr(theirs, &info) && info.dli_fname ?
        PyUnicode_DecodeFSDefault(info.dli_fname) : Py_NewRef(Py_None);
    if (!their_path) {
        Py_DECREF(our_path);
        return NULL;
    }
    return Py_BuildValue("(ONN)", theirs == ours ? Py_True : Py_False, our_path, their_path);
}

static PyObject *sodium_version(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(sodium_version_string());
}

static PyObject *sqlite_version(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(sqlite3_libversion());
}

static PyMethodDef methods[] = {
    {"writer_new", writer_new, METH_VARARGS, "A GIL-free audit writer on its own SQLite connection."},
    {"writer_submit", writer_submit, METH_VARARGS, "Queue a job: sign messages, append bodies."},
    {"writer_serve", writer_serve, METH_O, "Run the writer (blocks, without the GIL, until writer_stop)."},
    {"writer_rotate", writer_rotate, METH_VARARGS, "Queue a switch to another segment (after what is queued)."},
    {"writer_stop", writer_stop, METH_O, "Ask the writer to finish its queue and return."},
    {"writer_collect", writer_collect, METH_O, "Finished jobs: [(id, first_seq, signatures, error, group)]."},
    {"writer_set_head", writer_set_head, METH_VARARGS, "Set the chain head after re-reading it."},
    {"same_sqlite", same_sqlite, METH_O, "(same, ours, theirs): is Python's sqlite3 on this very SQLite library?"},
    {"sodium_version", sodium_version, METH_NOARGS, "The linked libsodium's version."},
    {"sqlite_version", sqlite_version, METH_NOARGS, "The linked SQLite's version."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "crumb.issuer._native._commit",
    "The issuer's audit writer without the GIL (see commit.c); loaded by crumb.issuer._native.", -1, methods,
};

PyMODINIT_FUNC PyInit__commit(void) {
    /* libsodium picks its implementations and seeds its generator here; 1 means already done. */
    if (sodium_init() < 0) {
        PyErr_SetString(PyExc_ImportError, "libsodium could not be initialised (sodium_init failed)");
        return NULL;
    }
    return PyModule_Create(&module);
}
