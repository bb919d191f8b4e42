/* crumb._commit: the issuer's commit step, one batch at a time, without the GIL.
 *
 * The issuer's event loop holds the GIL for all of its request handling. Its
 * commit thread signs a batch of tokens and hash-chains the batch's audit
 * records; done in Python, every libsodium call releases and retakes the GIL,
 * and each retake waits for the busy loop to let go (up to the switch
 * interval), so a thread could sign only a few hundred tokens a second. Here
 * the whole batch runs in one stretch with the GIL released, so signing runs
 * on the other core while the loop serves requests.
 *
 * No libsodium headers or link: the caller passes the addresses of
 * crypto_sign and crypto_hash_sha256 from PyNaCl's own compiled binding
 * (crumb/issuer/commit.py), so this uses exactly the libsodium that PyNaCl
 * does.
 *
 *   sign_and_chain(sign_addr, sha256_addr, secret_key, messages, prev, seq, bodies)
 *       -> (signatures, hashes)
 *
 * signatures[i] = the 64-byte Ed25519 signature of messages[i] (secret_key is
 * libsodium's 64-byte form); hashes[j] = SHA-256(h[j-1] || be64(seq + j) ||
 * bodies[j]) with h[-1] = prev: crumb.issuer.audit.record_hash, chained.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef int (*sign_fn)(unsigned char *sm, unsigned long long *smlen, const unsigned char *m,
                       unsigned long long mlen, const unsigned char *sk);
typedef int (*sha256_fn)(unsigned char *out, const unsigned char *in, unsigned long long inlen);

#define SIG_BYTES 64
#define HASH_BYTES 32
#define SK_BYTES 64
#define MAX_ITEMS 65536
#define MAX_ITEM_BYTES (1 << 20)

/* Borrowed views of a list of bytes, held alive by one reference each. */
typedef struct {
    Py_ssize_t n;
    PyObject **items;
    const unsigned char **data;
    Py_ssize_t *len;
    Py_ssize_t max_len;
} views;

static void views_free(views *v) {
    if (v->items) {
        for (Py_ssize_t i = 0; i < v->n; i++) Py_XDECREF(v->items[i]);
    }
    PyMem_Free(v->items);
    PyMem_Free((void *)v->data);
    PyMem_Free(v->len);
    memset(v, 0, sizeof(*v));
}

static int views_take(views *v, PyObject *list, const char *what) {
    memset(v, 0, sizeof(*v));
    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of bytes", what);
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > MAX_ITEMS) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d items per batch", what, MAX_ITEMS);
        return -1;
    }
    v->items = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    v->data = PyMem_Calloc(n ? n : 1, sizeof(unsigned char *));
    v->len = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    if (!v->items || !v->data || !v->len) {
        views_free(v);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item)) {
            v->n = i;
            views_free(v);
            PyErr_Format(PyExc_TypeError, "%s[%zd] is not bytes", what, i);
            return -1;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(item);
        if (len > MAX_ITEM_BYTES) {
            v->n = i;
            views_free(v);
            PyErr_Format(PyExc_ValueError, "%s[%zd] is longer than %d bytes", what, i, MAX_ITEM_BYTES);
            return -1;
        }
        Py_INCREF(item);
        v->items[i] = item;
        v->data[i] = (const unsigned char *)PyBytes_AS_STRING(item);
        v->len[i] = len;
        if (len > v->max_len) v->max_len = len;
    }
    v->n = n;
    return 0;
}

/* n fresh bytes objects of `size` bytes each, written below before anyone else sees them. */
static PyObject *fresh_list(Py_ssize_t n, Py_ssize_t size, unsigned char **out) {
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, size);
        if (!b) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, b);
        out[i] = (unsigned char *)PyBytes_AS_STRING(b);
    }
    return list;
}

static PyObject *sign_and_chain(PyObject *self, PyObject *args) {
    unsigned long long sign_addr, sha_addr, seq;
    Py_buffer sk, prev;
    PyObject *messages, *bodies;
    if (!PyArg_ParseTuple(args, "KKy*Oy*KO:sign_and_chain", &sign_addr, &sha_addr, &sk, &messages, &prev, &seq,
                          &bodies))
        return NULL;

    PyObject *result = NULL, *sigs = NULL, *hashes = NULL;
    views msg = {0}, body = {0};
    unsigned char **sig_out = NULL, **hash_out = NULL, *scratch = NULL;
    int failed = 0;

    if (sign_addr == 0 || sha_addr == 0) {
        PyErr_SetString(PyExc_ValueError, "null function address");
        goto done;
    }
    if (sk.len != SK_BYTES) {
        PyErr_SetString(PyExc_ValueError, "the secret key must be 64 bytes (libsodium form)");
        goto done;
    }
    if (prev.len != HASH_BYTES) {
        PyErr_SetString(PyExc_ValueError, "prev must be a 32-byte hash");
        goto done;
    }
    if (views_take(&msg, messages, "messages") < 0) goto done;
    if (views_take(&body, bodies, "bodies") < 0) goto done;
    if (seq > (unsigned long long)INT64_MAX - (unsigned long long)body.n) {
        PyErr_SetString(PyExc_OverflowError, "seq out of range");
        goto done;
    }

    sig_out = PyMem_Calloc(msg.n ? msg.n : 1, sizeof(unsigned char *));
    hash_out = PyMem_Calloc(body.n ? body.n : 1, sizeof(unsigned char *));
    /* crypto_sign writes signature || message; a chained record is prev || seq || body. */
    Py_ssize_t need = msg.max_len + SIG_BYTES;
    if (body.max_len + HASH_BYTES + 8 > need) need = body.max_len + HASH_BYTES + 8;
    scratch = PyMem_Malloc(need);
    if (!sig_out || !hash_out || !scratch) {
        PyErr_NoMemory();
        goto done;
    }
    if (!(sigs = fresh_list(msg.n, SIG_BYTES, sig_out))) goto done;
    if (!(hashes = fresh_list(body.n, HASH_BYTES, hash_out))) goto done;

    sign_fn sign = (sign_fn)(uintptr_t)sign_addr;
    sha256_fn sha256 = (sha256_fn)(uintptr_t)sha_addr;
    const unsigned char *key = (const unsigned char *)sk.buf;
    const unsigned char *link = (const unsigned char *)prev.buf;

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < msg.n && !failed; i++) {
        unsigned long long smlen = 0;
        if (sign(scratch, &smlen, msg.data[i], (unsigned long long)msg.len[i], key) != 0) failed = 1;
        else memcpy(sig_out[i], scratch, SIG_BYTES);
    }
    for (Py_ssize_t j = 0; j < body.n && !failed; j++) {
        unsigned long long s = seq + (unsigned long long)j;
        memcpy(scratch, link, HASH_BYTES);
        for (int k = 0; k < 8; k++) scratch[HASH_BYTES + k] = (unsigned char)(s >> (56 - 8 * k));
        memcpy(scratch + HASH_BYTES + 8, body.data[j], body.len[j]);
        if (sha256(hash_out[j], scratch, (unsigned long long)(HASH_BYTES + 8 + body.len[j])) != 0) failed = 1;
        link = hash_out[j];
    }
    Py_END_ALLOW_THREADS

    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "libsodium failed to sign or hash");
        goto done;
    }
    result = PyTuple_Pack(2, sigs, hashes);

done:
    Py_XDECREF(sigs);
    Py_XDECREF(hashes);
    views_free(&msg);
    views_free(&body);
    PyMem_Free(sig_out);
    PyMem_Free(hash_out);
    PyMem_Free(scratch);
    PyBuffer_Release(&sk);
    PyBuffer_Release(&prev);
    return result;
}

static PyMethodDef methods[] = {
    {"sign_and_chain", sign_and_chain, METH_VARARGS,
     "sign_and_chain(sign_addr, sha256_addr, secret_key, messages, prev, seq, bodies) -> (signatures, hashes)\n\n"
     "Ed25519-sign each message and hash-chain each audit body, with the GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "crumb._commit", "The issuer's commit step without the GIL (see _commit.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__commit(void) { return PyModule_Create(&module); }
