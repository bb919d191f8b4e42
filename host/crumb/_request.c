/* crumb._request: the common device request, in C, from parse to answer.
 *
 * Why: on the issuer's event loop the common request's own work (parse,
 * MAC, the token's and the audit record's bytes, the answer) was ~40 µs of
 * Python per request under load, spread over a dozen small steps (py-spy,
 * docs/issuer.md §9). Here each of those steps is one call of about a
 * microsecond. Every decision (policy, registry, nonce, rate, revocation)
 * stays in Python: this file only checks and writes bytes.
 *
 * What it may do is narrow, so that it cannot widen what the issuer accepts:
 *
 *   parse_common(data) -> TokenRequest or None
 *       exactly crumb.issuer.protocol._parse_common (the request
 *       {9: [resource, operation or method mask], 24: client_id, -1: nonce,
 *       -2: time as a 4-byte uint, -4: mac} in deterministic CBOR). None
 *       means "not that shape": the general parser decides, so anything
 *       unusual, malformed or truncated is judged by the Python code and
 *       refused with its message. A differential test holds the two to the
 *       same answers on generated inputs.
 *
 *   MacKey(key).verify(mac_input, mac) -> bool
 *       HMAC-SHA256(key, mac_input) truncated to 16 bytes, compared with
 *       mac in constant time (protocol.DeviceMacs). The key's inner and
 *       outer states are computed once per device, so a request costs three
 *       SHA-256 blocks and no allocation. hashlib's HMAC spends most of its
 *       ~7 µs in OpenSSL's per-call dispatch, not in hashing.
 *
 *   Lane(...).prepare(now, now_f, peer_json[, cti]) / .answer(unsigned, sig, now)
 *       the bytes of one token (up to its signature), its signing input and
 *       its audit record, from the templates issuing.py keeps per lane; and
 *       the single-token response once the writer has signed. Byte for byte
 *       minting.MintLane.prepare, audit.IssuedRecord.body_one and
 *       protocol.token_response_cbor (tests compare them).
 *
 * Every read is bounds-checked against its buffer.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <errno.h>

#define MAX_STRING 255
#define MAX_CLIENT_ID 64
#define NONCE_MIN 6
#define NONCE_MAX 16
#define MAC_BYTES 16

#define REQUEST_FIELDS 9

static long all_methods = 0;
static PyObject *request_type = NULL;   /* crumb.issuer.protocol.TokenRequest */

/* A text string of 1..limit bytes in preferred form at data[i]: its bounds, or 0. */
static int short_text(const unsigned char *d, Py_ssize_t n, Py_ssize_t i, Py_ssize_t limit,
                      Py_ssize_t *start, Py_ssize_t *end) {
    if (i >= n) return 0;
    unsigned char h = d[i];
    if (h >= 0x61 && h <= 0x77) {
        *start = i + 1;
        *end = i + 1 + (h - 0x60);
    } else if (h == 0x78) {
        if (i + 1 >= n || d[i + 1] < 24 || d[i + 1] > limit) return 0;
        *start = i + 2;
        *end = i + 2 + d[i + 1];
    } else {
        return 0;
    }
    return *end <= n;
}

/* [A-Za-z0-9][A-Za-z0-9._:@-]{0,63}, on the raw bytes (any non-ASCII byte fails, as in the regex). */
static int device_id_ok(const unsigned char *s, Py_ssize_t len) {
    if (len < 1 || len > MAX_CLIENT_ID) return 0;
    for (Py_ssize_t k = 0; k < len; k++) {
        unsigned char c = s[k];
        int alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (k == 0 || !(c == '.' || c == '_' || c == ':' || c == '@' || c == '-'))) return 0;
    }
    return 1;
}

static PyObject *text(const unsigned char *d, Py_ssize_t start, Py_ssize_t end) {
    /* Strict UTF-8, as bytes.decode("utf-8"): NULL (error cleared) if invalid. */
    PyObject *s = PyUnicode_DecodeUTF8((const char *)d + start, end - start, "strict");
    if (!s && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
    return s;
}

static PyObject *parse_common(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_common takes bytes");
        return NULL;
    }
    if (!request_type) {
        PyErr_SetString(PyExc_RuntimeError, "crumb._request.init() was not called");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    if (n < 40 || d[0] != 0xA5 || d[1] != 0x09 || d[2] != 0x82 || d[n - 18] != 0x23 || d[n - 17] != 0x50)
        Py_RETURN_NONE;
    Py_ssize_t res_start, res_end, perm_start = 0, perm_end = 0, id_start, id_end, i;
    long perm_int = -1;
    if (!short_text(d, n, 3, MAX_STRING, &res_start, &res_end)) Py_RETURN_NONE;
    i = res_end;
    if (i >= n) Py_RETURN_NONE;
    unsigned char h = d[i];
    if (h >> 5 == 3) {
        if (!short_text(d, n, i, MAX_STRING, &perm_start, &perm_end)) Py_RETURN_NONE;
        i = perm_end;
    } else if (h >= 1 && h <= 0x17) {
        perm_int = h;
        i += 1;
    } else if (h == 0x18) {
        if (i + 1 >= n || d[i + 1] < 24) Py_RETURN_NONE;
        perm_int = d[i + 1];
        i += 2;
    } else {
        Py_RETURN_NONE;
    }
    if (i + 1 >= n || d[i] != 0x18 || d[i + 1] != 0x18) Py_RETURN_NONE;
    if (!short_text(d, n, i + 2, MAX_CLIENT_ID, &id_start, &id_end)) Py_RETURN_NONE;
    i = id_end;
    if (i + 1 >= n) Py_RETURN_NONE;
    h = d[i + 1];
    if (d[i] != 0x20 || h < 0x40 + NONCE_MIN || h > 0x40 + NONCE_MAX) Py_RETURN_NONE;
    Py_ssize_t nonce_start = i + 2, end = i + 2 + (h - 0x40);
    if (end + 6 != n - 18 || d[end] != 0x21 || d[end + 1] != 0x1A) Py_RETURN_NONE;
    unsigned long t = ((unsigned long)d[end + 2] << 24) | ((unsigned long)d[end + 3] << 16) |
                      ((unsigned long)d[end + 4] << 8) | (unsigned long)d[end + 5];
    if (t < 0x10000 || !device_id_ok(d + id_start, id_end - id_start)) Py_RETURN_NONE;
    /* check_resource: '*' only as the last character. A 0x2A byte is always '*' in UTF-8. */
    for (Py_ssize_t k = res_start; k < res_end - 1; k++)
        if (d[k] == '*') Py_RETURN_NONE;
    /* check_permission: a method mask is non-empty with known bits only (text is 1..255 bytes already). */
    if (perm_int >= 0 && (perm_int <= 0 || (perm_int & ~all_methods))) Py_RETURN_NONE;

    PyObject *client_id = NULL, *resource = NULL, *perm = NULL, *entry = NULL, *scopes = NULL, *nonce = NULL,
             *time_ = NULL, *mac = NULL, *mac_input = NULL, *out = NULL;
    if (!(client_id = text(d, id_start, id_end))) goto done;  /* ASCII, so it decodes */
    if (!(resource = text(d, res_start, res_end))) goto done;
    perm = perm_int >= 0 ? PyLong_FromLong(perm_int) : text(d, perm_start, perm_end);
    if (!perm) goto done;
    if (!(entry = PyTuple_Pack(2, resource, perm))) goto done;
    if (!(scopes = PyList_New(1))) goto done;
    Py_INCREF(entry);
    PyList_SET_ITEM(scopes, 0, entry);
    if (!(nonce = PyBytes_FromStringAndSize((const char *)d + nonce_start, end - nonce_start))) goto done;
    if (!(time_ = PyLong_FromUnsignedLong(t))) goto done;
    if (!(mac = PyBytes_FromStringAndSize((const char *)d + n - MAC_BYTES, MAC_BYTES))) goto done;
    /* The MAC input: the request without its last entry, under a map header one smaller (0xA4). */
    if (!(mac_input = PyBytes_FromStringAndSize(NULL, n - 18))) goto done;
    char *m = PyBytes_AS_STRING(mac_input);
    m[0] = (char)0xA4;
    memcpy(m + 1, d + 1, (size_t)(n - 19));
    /* TokenRequest(client_id, scopes, nonce, time, 1, None, mac, mac_input, False), made as
     * tuple.__new__ makes a subclass instance (the named tuple's __new__ only packs its arguments). */
    out = ((PyTypeObject *)request_type)->tp_alloc((PyTypeObject *)request_type, REQUEST_FIELDS);
    if (!out) goto done;
    PyObject *items[REQUEST_FIELDS] = {client_id, scopes, nonce, time_, PyLong_FromLong(1), Py_None, mac, mac_input,
                                       Py_False};
    if (!items[4]) { Py_CLEAR(out); goto done; }
    for (int k = 0; k < REQUEST_FIELDS; k++) {
        if (k != 4) Py_INCREF(items[k]);  /* the 1 is a new reference already */
        PyTuple_SET_ITEM(out, k, items[k]);
    }
done:
    Py_XDECREF(client_id);
    Py_XDECREF(resource);
    Py_XDECREF(perm);
    Py_XDECREF(entry);
    Py_XDECREF(scopes);
    Py_XDECREF(nonce);
    Py_XDECREF(time_);
    Py_XDECREF(mac);
    Py_XDECREF(mac_input);
    if (!out && !PyErr_Occurred()) Py_RETURN_NONE;  /* invalid UTF-8: the general parser says so */
    return out;
}

/* init(method mask of all known REST methods, TokenRequest: a tuple subclass of REQUEST_FIELDS fields) */
static PyObject *init(PyObject *self, PyObject *args) {
    long mask;
    PyObject *type;
    if (!PyArg_ParseTuple(args, "lO:init", &mask, &type)) return NULL;
    if (mask <= 0 || !PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_ValueError, "a positive mask and a tuple type");
        return NULL;
    }
    PyObject *fields = PyObject_GetAttrString(type, "_fields");
    Py_ssize_t n = fields && PyTuple_Check(fields) ? PyTuple_GET_SIZE(fields) : -1;
    Py_XDECREF(fields);
    if (n != REQUEST_FIELDS) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "TokenRequest has %d fields here", REQUEST_FIELDS);
        return NULL;
    }
    all_methods = mask;
    Py_INCREF(type);
    Py_XSETREF(request_type, type);
    Py_RETURN_NONE;
}

/* -- SHA-256 (FIPS 180-4) and HMAC (RFC 2104), for MacKey ---------------------------- */

typedef struct {
    uint32_t h[8];
    unsigned char buf[64];
    size_t used;        /* bytes in buf */
    uint64_t total;     /* bytes hashed so far */
} sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = ROR(w[t - 15], 7) ^ ROR(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = ROR(w[t - 2], 17) ^ ROR(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[t] + w[t];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static void sha256_init(sha256_ctx *c) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->used = 0;
    c->total = 0;
}

static void sha256_update(sha256_ctx *c, const unsigned char *p, size_t n) {
    c->total += n;
    if (c->used) {
        size_t take = 64 - c->used < n ? 64 - c->used : n;
        memcpy(c->buf + c->used, p, take);
        c->used += take; p += take; n -= take;
        if (c->used < 64) return;
        sha256_block(c->h, c->buf);
        c->used = 0;
    }
    for (; n >= 64; p += 64, n -= 64) sha256_block(c->h, p);
    memcpy(c->buf, p, n);
    c->used = n;
}

static void sha256_final(sha256_ctx *c, unsigned char out[32]) {
    uint64_t bits = c->total * 8;
    c->buf[c->used++] = 0x80;
    if (c->used > 56) {
        memset(c->buf + c->used, 0, 64 - c->used);
        sha256_block(c->h, c->buf);
        c->used = 0;
    }
    memset(c->buf + c->used, 0, 56 - c->used);
    for (int k = 0; k < 8; k++) c->buf[56 + k] = (unsigned char)(bits >> (56 - 8 * k));
    sha256_block(c->h, c->buf);
    for (int k = 0; k < 8; k++) {
        out[4 * k] = (unsigned char)(c->h[k] >> 24); out[4 * k + 1] = (unsigned char)(c->h[k] >> 16);
        out[4 * k + 2] = (unsigned char)(c->h[k] >> 8); out[4 * k + 3] = (unsigned char)c->h[k];
    }
}

typedef struct {
    PyObject_HEAD
    sha256_ctx inner, outer;  /* after the key's ipad and opad blocks */
} MacKeyObject;

static int mackey_init(MacKeyObject *self, PyObject *args, PyObject *kwds) {
    Py_buffer key;
    static char *kwlist[] = {"key", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*:MacKey", kwlist, &key)) return -1;
    unsigned char k[64] = {0}, pad[64];
    if (key.len > 64) {
        sha256_ctx c;
        sha256_init(&c);
        sha256_update(&c, key.buf, (size_t)key.len);
        sha256_final(&c, k);
    } else {
        memcpy(k, key.buf, (size_t)key.len);
    }
    PyBuffer_Release(&key);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    sha256_init(&self->inner);
    sha256_update(&self->inner, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    sha256_init(&self->outer);
    sha256_update(&self->outer, pad, 64);
    memset(k, 0, sizeof k);
    memset(pad, 0, sizeof pad);
    return 0;
}

static void mackey_hmac(MacKeyObject *self, const unsigned char *m, size_t n, unsigned char out[32]) {
    sha256_ctx c = self->inner;
    unsigned char inner[32];
    sha256_update(&c, m, n);
    sha256_final(&c, inner);
    c = self->outer;
    sha256_update(&c, inner, 32);
    sha256_final(&c, out);
}

static PyObject *mackey_digest(MacKeyObject *self, PyObject *arg) {
    Py_buffer m;
    unsigned char out[32];
    if (PyObject_GetBuffer(arg, &m, PyBUF_SIMPLE) < 0) return NULL;
    mackey_hmac(self, m.buf, (size_t)m.len, out);
    PyBuffer_Release(&m);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyObject *mackey_verify(MacKeyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "verify(mac_input: bytes, mac: bytes)");
        return NULL;
    }
    unsigned char out[32];
    mackey_hmac(self, (const unsigned char *)PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0]), out);
    if (PyBytes_GET_SIZE(args[1]) != MAC_BYTES) Py_RETURN_FALSE;  /* the length is public */
    const unsigned char *given = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    unsigned char diff = 0;
    for (int i = 0; i < MAC_BYTES; i++) diff |= out[i] ^ given[i];  /* constant time */
    return PyBool_FromLong(diff == 0);
}

static PyMethodDef mackey_methods[] = {
    {"digest", (PyCFunction)mackey_digest, METH_O, "HMAC-SHA256(key, data), all 32 bytes."},
    {"verify", (PyCFunction)(void (*)(void))mackey_verify, METH_FASTCALL,
     "verify(mac_input, mac): whether mac is the first 16 bytes of HMAC-SHA256(key, mac_input); constant time."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MacKeyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "crumb._request.MacKey",
    .tp_basicsize = sizeof(MacKeyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "MacKey(key): HMAC-SHA256 under key, with its padded-key states computed once.",
    .tp_methods = mackey_methods,
    .tp_init = (initproc)mackey_init,
    .tp_new = PyType_GenericNew,
};

/* -- Lane: one token, its record and its answer, from templates ------------------------ */

#define CTI_BYTES 8   /* crumb.wire.CTI_BYTES; fastreq checks they agree */
#define CTI_POOL 512

static unsigned char cti_pool[CTI_BYTES * CTI_POOL];
static int cti_left = 0;
static pid_t cti_pid = 0;

/* A fresh token id: from one getrandom() per CTI_POOL ids, never handed out twice,
 * and never shared with a forked child (the pool is dropped when the pid changes). */
static int new_cti(unsigned char out[CTI_BYTES]) {
    pid_t pid = getpid();
    if (cti_left == 0 || pid != cti_pid) {
        size_t got = 0;
        while (got < sizeof cti_pool) {
            ssize_t r = getrandom(cti_pool + got, sizeof cti_pool - got, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                PyErr_SetFromErrno(PyExc_OSError);
                cti_left = 0;
                return -1;
            }
            got += (size_t)r;
        }
        cti_left = CTI_POOL;
        cti_pid = pid;
    }
    cti_left--;
    memcpy(out, cti_pool + CTI_BYTES * cti_left, CTI_BYTES);
    memset(cti_pool + CTI_BYTES * cti_left, 0, CTI_BYTES);
    return 0;
}

typedef struct {
    PyObject_HEAD
    PyObject *claims_prefix, *claims_suffix, *token_head, *sign_head;  /* minting.MintLane's template */
    PyObject *rec_head, *rec_mid, *rec_tail;                           /* audit.IssuedRecord, UTF-8 */
    long long ttl, uses;
} LaneObject;

/* CBOR head of major type mt for value v, in preferred form; returns its length. */
static size_t cbor_head(unsigned char *o, unsigned char mt, uint64_t v) {
    mt <<= 5;
    if (v < 24) { o[0] = mt | (unsigned char)v; return 1; }
    if (v < 0x100) { o[0] = mt | 24; o[1] = (unsigned char)v; return 2; }
    if (v < 0x10000) { o[0] = mt | 25; o[1] = (unsigned char)(v >> 8); o[2] = (unsigned char)v; return 3; }
    if (v < 0x100000000ULL) {
        o[0] = mt | 26;
        for (int k = 0; k < 4; k++) o[1 + k] = (unsigned char)(v >> (24 - 8 * k));
        return 5;
    }
    o[0] = mt | 27;
    for (int k = 0; k < 8; k++) o[1 + k] = (unsigned char)(v >> (56 - 8 * k));
    return 9;
}

static int lane_init(LaneObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"claims_prefix", "claims_suffix", "token_head", "sign_head", "record_head",
                             "record_mid", "record_tail", "ttl", "uses", NULL};
    PyObject *f[7];
    long long ttl, uses;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "SSSSSSSLL:Lane", kwlist, &f[0], &f[1], &f[2], &f[3], &f[4],
                                     &f[5], &f[6], &ttl, &uses))
        return -1;
    if (ttl < 0 || uses < 0 || ttl > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "ttl and uses are unsigned, ttl below 2**32");
        return -1;
    }
    PyObject **slots[7] = {&self->claims_prefix, &self->claims_suffix, &self->token_head, &self->sign_head,
                           &self->rec_head, &self->rec_mid, &self->rec_tail};
    for (int k = 0; k < 7; k++) {
        Py_INCREF(f[k]);
        Py_XSETREF(*slots[k], f[k]);
    }
    self->ttl = ttl;
    self->uses = uses;
    return 0;
}

static void lane_dealloc(LaneObject *self) {
    Py_XDECREF(self->claims_prefix); Py_XDECREF(self->claims_suffix); Py_XDECREF(self->token_head);
    Py_XDECREF(self->sign_head); Py_XDECREF(self->rec_head); Py_XDECREF(self->rec_mid); Py_XDECREF(self->rec_tail);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static unsigned char *put(unsigned char *o, PyObject *b) {
    memcpy(o, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    return o + PyBytes_GET_SIZE(b);
}

#define MAX_PAYLOAD 65535   /* templates are small; the bstr head of a payload takes at most 3 bytes here */

/* prepare(now, now_f, peer_json, cti=None) -> (unsigned token, signing input, audit record) or None.
 * None when now or now + ttl is outside the 4-byte form every real token uses (the caller mints in Python). */
static PyObject *lane_prepare(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 3 || nargs > 4 || !PyLong_Check(args[0]) || !PyFloat_Check(args[1]) || !PyBytes_Check(args[2]) ||
        (nargs == 4 && args[3] != Py_None && !PyBytes_Check(args[3]))) {
        PyErr_SetString(PyExc_TypeError, "prepare(now: int, now_f: float, peer_json: bytes, cti: bytes | None = None)");
        return NULL;
    }
    int overflow = 0;
    long long now = PyLong_AsLongLongAndOverflow(args[0], &overflow);
    if (overflow || (now == -1 && PyErr_Occurred())) { PyErr_Clear(); Py_RETURN_NONE; }
    long long exp = now + self->ttl;
    if (now < 0x10000 || exp >= 0x100000000LL) Py_RETURN_NONE;
    double now_f = PyFloat_AS_DOUBLE(args[1]);
    if (!(now_f >= 0.0 && now_f < 9.0e15)) Py_RETURN_NONE;
    long long t_ms = (long long)(now_f * 1000.0);  /* int(now_f * 1000): the same product, truncated */
    unsigned char cti[CTI_BYTES];
    if (nargs == 4 && args[3] != Py_None) {
        if (PyBytes_GET_SIZE(args[3]) != CTI_BYTES) {
            PyErr_Format(PyExc_ValueError, "a cti is %d bytes", CTI_BYTES);
            return NULL;
        }
        memcpy(cti, PyBytes_AS_STRING(args[3]), CTI_BYTES);
    } else if (new_cti(cti) < 0) {
        return NULL;
    }
    /* payload = claims prefix, 04 1a exp, 06 1a iat, 07 50 cti, claims suffix */
    Py_ssize_t plen = PyBytes_GET_SIZE(self->claims_prefix) + 12 + 2 + CTI_BYTES + PyBytes_GET_SIZE(self->claims_suffix);
    if (plen > MAX_PAYLOAD) Py_RETURN_NONE;
    unsigned char phead[3];
    size_t phl = cbor_head(phead, 2, (uint64_t)plen);
    PyObject *unsigned_ = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(self->token_head) + (Py_ssize_t)phl + plen);
    PyObject *to_sign = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(self->sign_head) + (Py_ssize_t)phl + plen);
    /* record: head exp mid peer tail t ,"tokens":["hex"]} */
    char exp_s[24], t_s[24];
    int exp_n = snprintf(exp_s, sizeof exp_s, "%lld", exp), t_n = snprintf(t_s, sizeof t_s, "%lld", t_ms);
    static const char tok_open[] = ",\"tokens\":[\"", tok_close[] = "\"]}";
    Py_ssize_t rlen = PyBytes_GET_SIZE(self->rec_head) + exp_n + PyBytes_GET_SIZE(self->rec_mid) +
                      PyBytes_GET_SIZE(args[2]) + PyBytes_GET_SIZE(self->rec_tail) + t_n +
                      (Py_ssize_t)(sizeof tok_open - 1) + 2 * CTI_BYTES + (Py_ssize_t)(sizeof tok_close - 1);
    PyObject *record = PyBytes_FromStringAndSize(NULL, rlen);
    if (!unsigned_ || !to_sign || !record) goto fail;

    unsigned char *u = (unsigned char *)PyBytes_AS_STRING(unsigned_);
    u = put(u, self->token_head);
    memcpy(u, phead, phl); u += phl;
    unsigned char *payload = u;
    u = put(u, self->claims_prefix);
    *u++ = 0x04; *u++ = 0x1A;
    for (int k = 0; k < 4; k++) *u++ = (unsigned char)(exp >> (24 - 8 * k));
    *u++ = 0x06; *u++ = 0x1A;
    for (int k = 0; k < 4; k++) *u++ = (unsigned char)(now >> (24 - 8 * k));
    *u++ = 0x07; *u++ = 0x40 | CTI_BYTES;
    memcpy(u, cti, CTI_BYTES); u += CTI_BYTES;
    u = put(u, self->claims_suffix);

    unsigned char *s = (unsigned char *)PyBytes_AS_STRING(to_sign);
    s = put(s, self->sign_head);
    memcpy(s, phead, phl); s += phl;
    memcpy(s, payload, (size_t)plen);

    static const char hex[] = "0123456789abcdef";
    unsigned char *r = (unsigned char *)PyBytes_AS_STRING(record);
    r = put(r, self->rec_head);
    memcpy(r, exp_s, (size_t)exp_n); r += exp_n;
    r = put(r, self->rec_mid);
    r = put(r, args[2]);
    r = put(r, self->rec_tail);
    memcpy(r, t_s, (size_t)t_n); r += t_n;
    memcpy(r, tok_open, sizeof tok_open - 1); r += sizeof tok_open - 1;
    for (int k = 0; k < CTI_BYTES; k++) { *r++ = (unsigned char)hex[cti[k] >> 4]; *r++ = (unsigned char)hex[cti[k] & 15]; }
    memcpy(r, tok_close, sizeof tok_close - 1);

    PyObject *out = PyTuple_New(3);
    if (!out) goto fail;
    PyTuple_SET_ITEM(out, 0, unsigned_);
    PyTuple_SET_ITEM(out, 1, to_sign);
    PyTuple_SET_ITEM(out, 2, record);
    return out;
fail:
    Py_XDECREF(unsigned_);
    Py_XDECREF(to_sign);
    Py_XDECREF(record);
    return NULL;
}

/* answer(unsigned, signature, now) -> the single-token response (protocol.token_response_cbor):
 * {1: token, 2: ttl, -2: now[, -6: uses]} with token = unsigned || 58 40 || signature. */
static PyObject *lane_answer(LaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) || !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "answer(unsigned: bytes, signature: bytes, now: int)");
        return NULL;
    }
    if (PyBytes_GET_SIZE(args[1]) != 64) {
        PyErr_SetString(PyExc_ValueError, "an Ed25519 signature is 64 bytes");
        return NULL;
    }
    unsigned long long now = PyLong_AsUnsignedLongLong(args[2]);
    if (now == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    Py_ssize_t tlen = PyBytes_GET_SIZE(args[0]) + 2 + 64;
    unsigned char heads[64], *h = heads;
    *h++ = self->uses != 1 ? 0xA4 : 0xA3;
    *h++ = 0x01;
    h += cbor_head(h, 2, (uint64_t)tlen);
    size_t lead = (size_t)(h - heads);
    unsigned char tail[32], *t = tail;
    *t++ = 0x02;
    t += cbor_head(t, 0, (uint64_t)self->ttl);
    *t++ = 0x21;
    t += cbor_head(t, 0, now);
    if (self->uses != 1) {
        *t++ = 0x25;
        t += cbor_head(t, 0, (uint64_t)self->uses);
    }
    size_t trail = (size_t)(t - tail);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)lead + tlen + (Py_ssize_t)trail);
    if (!out) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(o, heads, lead); o += lead;
    o = put(o, args[0]);
    *o++ = 0x58; *o++ = 0x40;
    o = put(o, args[1]);
    memcpy(o, tail, trail);
    return out;
}

static PyMethodDef lane_methods[] = {
    {"prepare", (PyCFunction)(void (*)(void))lane_prepare, METH_FASTCALL,
     "prepare(now, now_f, peer_json, cti=None) -> (unsigned token, signing input, audit record) or None."},
    {"answer", (PyCFunction)(void (*)(void))lane_answer, METH_FASTCALL,
     "answer(unsigned, signature, now) -> the CBOR single-token response."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "crumb._request.Lane",
    .tp_basicsize = sizeof(LaneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Lane(claims_prefix, claims_suffix, token_head, sign_head, record_head, record_mid, record_tail, "
              "ttl, uses): one lane's token, record and answer bytes.",
    .tp_methods = lane_methods,
    .tp_init = (initproc)lane_init,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)lane_dealloc,
};

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "Set the method mask and the TokenRequest type."},
    {"parse_common", parse_common, METH_O, "The common device request as a TokenRequest, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "crumb._request", "The common device request parsed in C (see _request.c).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__request(void) {
    if (PyType_Ready(&MacKeyType) < 0 || PyType_Ready(&LaneType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&MacKeyType);
    Py_INCREF(&LaneType);
    if (PyModule_AddObject(m, "MacKey", (PyObject *)&MacKeyType) < 0 ||
        PyModule_AddObject(m, "Lane", (PyObject *)&LaneType) < 0 ||
        PyModule_AddIntConstant(m, "CTI_BYTES", CTI_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
