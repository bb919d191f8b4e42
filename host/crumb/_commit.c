/* crumb._commit: the issuer's audit writer, without the GIL.
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
 * No library headers or link: the caller passes the addresses of
 * crypto_sign and crypto_hash_sha256 from PyNaCl's own libsodium, and of
 * SQLite's C API from the library Python's sqlite3 module loaded
 * (crumb/issuer/commit.py), so this uses exactly the libraries, and the file
 * locks, the rest of the process does.
 *
 * A record's hash is SHA-256(previous hash || be64(seq) || body), as
 * crumb.issuer.audit.record_hash.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>
#include <errno.h>

typedef int (*sign_fn)(unsigned char *sm, unsigned long long *smlen, const unsigned char *m,
                       unsigned long long mlen, const unsigned char *sk);
typedef int (*sha256_fn)(unsigned char *out, const unsigned char *in, unsigned long long inlen);

#define SIG_BYTES 64
#define HASH_BYTES 32
#define SK_BYTES 64
#define MAX_ITEMS 65536
#define MAX_ITEM_BYTES (1 << 20)
#define GROUP_RECORDS 1024  /* records per transaction when jobs queue up */


typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
typedef int (*open_fn)(const char *, sqlite3 **, int, const char *);
typedef int (*close_fn)(sqlite3 *);
typedef int (*exec_fn)(sqlite3 *, const char *, void *, void *, char **);
typedef int (*prepare_fn)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
typedef int (*bind_int64_fn)(sqlite3_stmt *, int, long long);
typedef int (*bind_blob_fn)(sqlite3_stmt *, int, const void *, int, void (*)(void *));
typedef int (*step_fn)(sqlite3_stmt *);
typedef int (*reset_fn)(sqlite3_stmt *);
typedef int (*finalize_fn)(sqlite3_stmt *);
typedef const char *(*errmsg_fn)(sqlite3 *);
typedef int (*busy_fn)(sqlite3 *, int);

#define SQLITE_OK 0
#define SQLITE_DONE 101
#define SQLITE_OPEN_READWRITE 0x2
#define SQLITE_OPEN_CREATE 0x4

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
} job;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    job *todo, *todo_tail, *done, *done_tail;
    int stop, serving, efd;
    sign_fn sign;
    sha256_fn sha256;
    open_fn open;
    close_fn close;
    exec_fn exec;
    prepare_fn prepare;
    bind_int64_fn bind_int64;
    bind_blob_fn bind_blob;
    step_fn step;
    reset_fn reset;
    finalize_fn finalize;
    errmsg_fn errmsg;
    sqlite3 *db;
    sqlite3_stmt *insert;
    int head_valid;
    long long groups;   /* transactions attempted so far */
    long long head_seq;
    unsigned char head_hash[HASH_BYTES];
} writer;

static void job_free(job *j) {
    if (!j) return;
    if (j->msgs) for (Py_ssize_t i = 0; i < j->n_msgs; i++) PyMem_RawFree(j->msgs[i]);
    if (j->bodies) for (Py_ssize_t i = 0; i < j->n_bodies; i++) PyMem_RawFree(j->bodies[i]);
    PyMem_RawFree(j->msgs);
    PyMem_RawFree(j->bodies);
    PyMem_RawFree(j->msg_len);
    PyMem_RawFree(j->body_len);
    PyMem_RawFree(j->sigs);
    PyMem_RawFree(j);
}

static void writer_destroy(PyObject *capsule) {
    writer *w = PyCapsule_GetPointer(capsule, "crumb._commit.writer");
    if (!w) return;
    for (job *j = w->todo; j;) { job *n = j->next; job_free(j); j = n; }
    for (job *j = w->done; j;) { job *n = j->next; job_free(j); j = n; }
    if (w->insert) w->finalize(w->insert);
    if (w->db) w->close(w->db);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->ready);
    PyMem_RawFree(w);
}

static writer *get_writer(PyObject *capsule) {
    return PyCapsule_GetPointer(capsule, "crumb._commit.writer");
}

/* writer_new(addresses, path, synchronous, efd, head_seq, head_hash) -> writer
 * addresses: (crypto_sign, crypto_hash_sha256, sqlite3_open_v2, sqlite3_close, sqlite3_exec,
 *             sqlite3_prepare_v2, sqlite3_bind_int64, sqlite3_bind_blob, sqlite3_step,
 *             sqlite3_reset, sqlite3_finalize, sqlite3_errmsg, sqlite3_busy_timeout) */
static PyObject *writer_new(PyObject *self, PyObject *args) {
    unsigned long long a[13];
    const char *path, *sync;
    int efd;
    long long head_seq;
    Py_buffer head;
    if (!PyArg_ParseTuple(args, "(KKKKKKKKKKKKK)ssiLy*:writer_new", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5],
                          &a[6], &a[7], &a[8], &a[9], &a[10], &a[11], &a[12], &path, &sync, &efd, &head_seq,
                          &head))
        return NULL;
    for (int i = 0; i < 13; i++) {
        if (!a[i]) {
            PyBuffer_Release(&head);
            PyErr_SetString(PyExc_ValueError, "null function address");
            return NULL;
        }
    }
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
    w->sign = (sign_fn)(uintptr_t)a[0];
    w->sha256 = (sha256_fn)(uintptr_t)a[1];
    w->open = (open_fn)(uintptr_t)a[2];
    w->close = (close_fn)(uintptr_t)a[3];
    w->exec = (exec_fn)(uintptr_t)a[4];
    w->prepare = (prepare_fn)(uintptr_t)a[5];
    w->bind_int64 = (bind_int64_fn)(uintptr_t)a[6];
    w->bind_blob = (bind_blob_fn)(uintptr_t)a[7];
    w->step = (step_fn)(uintptr_t)a[8];
    w->reset = (reset_fn)(uintptr_t)a[9];
    w->finalize = (finalize_fn)(uintptr_t)a[10];
    w->errmsg = (errmsg_fn)(uintptr_t)a[11];
    busy_fn busy = (busy_fn)(uintptr_t)a[12];
    w->efd = efd;
    w->head_valid = 1;
    w->head_seq = head_seq;
    memcpy(w->head_hash, head.buf, HASH_BYTES);
    PyBuffer_Release(&head);
    PyObject *capsule = PyCapsule_New(w, "crumb._commit.writer", writer_destroy);
    if (!capsule) {
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->ready);
        PyMem_RawFree(w);
        return NULL;
    }
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;", sync);
    if (w->open(path, &w->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK ||
        busy(w->db, 30000) != SQLITE_OK || w->exec(w->db, pragma, NULL, NULL, NULL) != SQLITE_OK ||
        w->prepare(w->db, "INSERT INTO audit (seq, body, prev, hash) VALUES (?,?,?,?)", -1, &w->insert,
                   NULL) != SQLITE_OK) {
        PyErr_Format(PyExc_OSError, "the audit log %s cannot be opened for writing: %s", path,
                     w->db ? w->errmsg(w->db) : "out of memory");
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

/* Runs without the GIL: the signatures of one job; on failure the job fails alone. */
static void sign_job(writer *w, job *j) {
    for (Py_ssize_t i = 0; i < j->n_msgs; i++) {
        unsigned long long smlen = 0;
        unsigned char *sm = PyMem_RawMalloc(j->msg_len[i] + SIG_BYTES);
        if (!sm) { fail_job(w, j, "out of memory"); return; }
        int rc = w->sign(sm, &smlen, j->msgs[i], (unsigned long long)j->msg_len[i], j->sk);
        if (rc == 0) memcpy(j->sigs + i * SIG_BYTES, sm, SIG_BYTES);
        PyMem_RawFree(sm);
        if (rc != 0) { fail_job(w, j, "libsodium failed to sign"); return; }
    }
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
    if (w->exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) goto sqlfail;
    for (job *j = group; j; j = j->next) {
        if (j->failed) continue;
        j->first_seq = seq + 1;
        for (Py_ssize_t i = 0; i < j->n_bodies; i++) {
            seq++;
            size_t n = HASH_BYTES + 8 + j->body_len[i];
            unsigned char *buf = PyMem_RawMalloc(n);
            if (!buf) {
                w->exec(w->db, "ROLLBACK", NULL, NULL, NULL);
                fail_group(w, group, "out of memory");
                goto invalid;
            }
            memcpy(buf, prev, HASH_BYTES);
            for (int k = 0; k < 8; k++) buf[HASH_BYTES + k] = (unsigned char)((unsigned long long)seq >> (56 - 8 * k));
            memcpy(buf + HASH_BYTES + 8, j->bodies[i], j->body_len[i]);
            int rc = w->sha256(hash, buf, (unsigned long long)n);
            PyMem_RawFree(buf);
            if (rc != 0 || w->bind_int64(w->insert, 1, seq) != SQLITE_OK ||
                w->bind_blob(w->insert, 2, j->bodies[i], (int)j->body_len[i], NULL) != SQLITE_OK ||
                w->bind_blob(w->insert, 3, prev, HASH_BYTES, NULL) != SQLITE_OK ||
                w->bind_blob(w->insert, 4, hash, HASH_BYTES, NULL) != SQLITE_OK ||
                w->step(w->insert) != SQLITE_DONE) {
                w->reset(w->insert);
                goto sqlfail_rollback;
            }
            w->reset(w->insert);
            memcpy(prev, hash, HASH_BYTES);
        }
    }
    if (w->exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto sqlfail_rollback;
    pthread_mutex_lock(&w->lock);
    w->head_seq = seq;
    memcpy(w->head_hash, prev, HASH_BYTES);
    pthread_mutex_unlock(&w->lock);
    return;
sqlfail_rollback:
    fail_group(w, group, w->errmsg(w->db));
    w->exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    goto invalid;
sqlfail:
    fail_group(w, group, w->errmsg(w->db));
invalid:
    pthread_mutex_lock(&w->lock);
    w->head_valid = 0;
    pthread_mutex_unlock(&w->lock);
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
        while (last->next && records + last->next->n_bodies <= GROUP_RECORDS) {
            last = last->next;
            records += last->n_bodies;
        }
        w->todo = last->next;
        if (!w->todo) w->todo_tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->lock);
        long long number = ++w->groups;  /* only this thread writes it */
        for (job *j = group; j; j = j->next) {
            j->group = number;
            sign_job(w, j);
        }
        commit_group(w, group);
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

static PyMethodDef methods[] = {
    {"writer_new", writer_new, METH_VARARGS, "A GIL-free audit writer on its own SQLite connection."},
    {"writer_submit", writer_submit, METH_VARARGS, "Queue a job: sign messages, append bodies."},
    {"writer_serve", writer_serve, METH_O, "Run the writer (blocks, without the GIL, until writer_stop)."},
    {"writer_stop", writer_stop, METH_O, "Ask the writer to finish its queue and return."},
    {"writer_collect", writer_collect, METH_O, "Finished jobs: [(id, first_seq, signatures, error, group)]."},
    {"writer_set_head", writer_set_head, METH_VARARGS, "Set the chain head after re-reading it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "crumb._commit", "The issuer's audit writer without the GIL (see _commit.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__commit(void) { return PyModule_Create(&module); }
