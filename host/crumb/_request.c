/* crumb._request: the common device request, parsed in C.
 *
 * Why: on the issuer's event loop, parsing the request nearly every device
 * sends took ~10 µs of Python per request under load (py-spy, docs/issuer.md
 * §9), a sixteenth of the loop's whole budget. This does it in about one.
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
 * The MAC stays in Python: hashlib's HMAC from a per-device keyed state is
 * faster than any one-shot HMAC here (it skips hashing the padded key). Every
 * read is bounds-checked against the buffer: nothing here reads past the body.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "Set the method mask and the TokenRequest type."},
    {"parse_common", parse_common, METH_O, "The common device request as a TokenRequest, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "crumb._request", "The common device request parsed in C (see _request.c).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__request(void) { return PyModule_Create(&module); }
