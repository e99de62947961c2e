/* channelsd_picker: take only the headers the channel table reads out of a FreeSWITCH json
 * event, without building the other ~50 strings of it.
 *
 * Why: orjson builds every header of an event (~70 of them, ~2.5 KB) and the table reads ~20;
 * the parse was the larger half of channelsd's cost per event (BENCHMARKS.md, issue #16).
 *
 * The contract (held by tests/test_eventpick.py and tests/test_eventpick_attack.py against
 * orjson on every capture and on hostile bodies): Picker.pick(body) returns either None, or
 * exactly
 *     {k: v for k, v in orjson.loads(body).items() if k in names or k.startswith(prefix)}
 * (an empty prefix is every key). It returns None, and the caller parses the whole body as
 * before, for anything but the plain case FreeSWITCH sends: a flat JSON object of ASCII strings
 * whose escapes are the two-character ones, in a bytes, bytearray or contiguous memoryview.
 * So a non-ASCII byte, a \u escape, a control character, a nested value, a number, any syntax
 * error, or a body of another type is orjson's to judge, never this file's.
 *
 * Memory safety: every read is bounded by the body's end; the 16-byte loads stop 16 bytes
 * short of it and the tail is read a byte at a time. A failed __init__ changes nothing; a
 * Picker never initialised raises. No Python code can run once pick() has read the picker's
 * state (its one allocation that may start a collection, hence a finalizer that could call
 * __init__ again, comes first; names are exact str, whose hash and equality are C's). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define BUCKETS 256
#define MAX_NAMES 4096

/* The sha256 of picker.c, set by setup.py: tests check that the build they import is this
 * source's (an in-place build is found first and never rebuilt by editing this file). */
#ifndef PICKER_SOURCE_SHA256
#define PICKER_SOURCE_SHA256 ""
#endif

typedef struct {
    PyObject_HEAD
    PyObject *names;  /* tuple of the wanted header names (exact str, ASCII); NULL: no init */
    PyObject *prefix; /* bytes: headers starting with it are wanted too (b"": every one) */
    Py_ssize_t count;
    int head[BUCKETS];
    int *next;
} Picker;

static unsigned
bucket_of(const char *s, Py_ssize_t n)
{
    /* Header names differ early, late or in length: four bytes are enough to spread ~100. */
    unsigned h = (unsigned)n * 31u;
    if (n > 0)
        h += (unsigned char)s[0] * 7u + (unsigned char)s[n - 1] * 131u
             + (unsigned char)s[n / 2] * 17u + (unsigned char)s[n * 3 / 4];
    return h & (BUCKETS - 1);
}

static void
Picker_dealloc(Picker *self)
{
    Py_XDECREF(self->names);
    Py_XDECREF(self->prefix);
    PyMem_Free(self->next);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
plain_ascii(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

static int
Picker_init(Picker *self, PyObject *args, PyObject *kwds)
{
    /* Everything is built aside and the picker changed only once all of it is: a failed
     * __init__ leaves it as it was (its hash chains index its own names tuple). */
    static char *kwlist[] = {"names", "prefix", NULL};
    PyObject *names_in, *prefix_in;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OU", kwlist, &names_in, &prefix_in))
        return -1;
    if (PyUnicode_Check(names_in) || PyBytes_Check(names_in) || PyByteArray_Check(names_in)) {
        /* `k in "Unique-ID"` would be a substring test, not one name */
        PyErr_SetString(PyExc_TypeError, "names must be a sequence of str, not one string");
        return -1;
    }
    PyObject *given = PySequence_Tuple(names_in);
    if (given == NULL)
        return -1;
    PyObject *names = NULL, *prefix = NULL;
    int *next = NULL;
    int head[BUCKETS];
    Py_ssize_t count = PyTuple_GET_SIZE(given);
    if (count > MAX_NAMES) {
        PyErr_SetString(PyExc_ValueError, "too many header names");
        goto fail;
    }
    names = PyTuple_New(count);
    next = PyMem_Calloc(count ? count : 1, sizeof(int));
    if (names == NULL || next == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto fail;
    }
    for (int b = 0; b < BUCKETS; b++)
        head[b] = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(given, i);
        Py_ssize_t n;
        const char *s;
        /* A name is matched by its bytes in the body: only names JSON writes as they are. */
        if (!PyUnicode_Check(name) || (s = PyUnicode_AsUTF8AndSize(name, &n)) == NULL
            || !PyUnicode_IS_ASCII(name) || !plain_ascii(s, n)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "a header name is not plain printable ASCII");
            goto fail;
        }
        /* A str subclass's hash and equality would run in pick(), and orjson's keys are str. */
        PyObject *exact = PyUnicode_CheckExact(name) ? Py_NewRef(name)
                                                     : PyUnicode_FromStringAndSize(s, n);
        if (exact == NULL)
            goto fail;
        PyTuple_SET_ITEM(names, i, exact);
        unsigned b = bucket_of(s, n);
        next[i] = head[b];
        head[b] = (int)i;
    }
    Py_ssize_t plen;
    const char *p = PyUnicode_AsUTF8AndSize(prefix_in, &plen);
    if (p == NULL || !PyUnicode_IS_ASCII(prefix_in) || !plain_ascii(p, plen)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "the prefix is not plain printable ASCII");
        goto fail;
    }
    prefix = PyBytes_FromStringAndSize(p, plen);
    if (prefix == NULL)
        goto fail;
    Py_DECREF(given);
    PyObject *old_names = self->names, *old_prefix = self->prefix;
    int *old_next = self->next;
    memcpy(self->head, head, sizeof head);
    self->names = names;
    self->prefix = prefix;
    self->next = next;
    self->count = count;
    Py_XDECREF(old_names);
    Py_XDECREF(old_prefix);
    PyMem_Free(old_next);
    return 0;
fail:
    Py_DECREF(given);
    Py_XDECREF(names);
    PyMem_Free(next);
    return -1;
}

/* The wanted name this key is (a borrowed reference), or NULL. */
static PyObject *
lookup(Picker *self, const char *s, Py_ssize_t n)
{
    for (int i = self->head[bucket_of(s, n)]; i >= 0; i = self->next[i]) {
        PyObject *name = PyTuple_GET_ITEM(self->names, i);
        if (PyUnicode_GET_LENGTH(name) == n && memcmp(PyUnicode_DATA(name), s, n) == 0)
            return name;
    }
    return NULL;
}

/* From just after a string's opening quote: its closing quote, or NULL when the string is
 * not the plain case (see the top of the file). *escaped is set when it holds an escape. */
static const char *
string_end(const char *p, const char *end, int *escaped)
{
    for (;;) {
#if defined(__SSE2__)
        const __m128i quote = _mm_set1_epi8('"');
        const __m128i bslash = _mm_set1_epi8('\\');
        const __m128i space = _mm_set1_epi8(0x20);
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            /* signed: bytes >= 0x80 are negative, so below a space too */
            __m128i special = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                _mm_cmplt_epi8(v, space));
            int mask = _mm_movemask_epi8(special);
            if (mask) {
                p += __builtin_ctz((unsigned)mask);
                goto found;
            }
            p += 16;
        }
#endif
        for (;;) {
            if (p >= end)
                return NULL;
            unsigned char c = (unsigned char)*p;
            if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80)
                break;
            p++;
        }
#if defined(__SSE2__)
    found:
#endif
        if (*p == '"')
            return p;
        if (*p != '\\' || end - p < 2)
            return NULL;
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            *escaped = 1;
            p += 2;
            break;
        default: /* \u (orjson's to decode) or not an escape at all */
            return NULL;
        }
    }
}

static PyObject *
ascii_str(const char *s, Py_ssize_t n, int escaped)
{
    PyObject *str = PyUnicode_New(n, 127);
    if (str == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(str);
    if (!escaped) {
        memcpy(out, s, n);
        return str;
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\') {
            /* string_end let only the two-character escapes through */
            switch (s[++i]) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            default: c = s[i]; break; /* " \ / */
            }
        }
        out[k++] = (Py_UCS1)c;
    }
    if (k == n)
        return str;
    PyObject *cut = PyUnicode_Substring(str, 0, k);
    Py_DECREF(str);
    return cut;
}

static const char *
skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static PyObject *
Picker_pick(Picker *self, PyObject *arg)
{
    if (self->names == NULL || self->prefix == NULL) {
        PyErr_SetString(PyExc_TypeError, "Picker.__init__ was not called");
        return NULL;
    }
    /* orjson reads these three (and str, which is no body of an event): anything else is
     * orjson's to judge, and so is a buffer that is not one run of bytes. */
    if (!PyBytes_CheckExact(arg) && !PyByteArray_CheckExact(arg) && !PyMemoryView_Check(arg))
        Py_RETURN_NONE;
    /* First: it may start a collection, whose finalizers may call __init__ (see the top). */
    PyObject *found = PyDict_New();
    if (found == NULL)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        /* not C-contiguous, released: orjson's to judge */
        PyErr_Clear();
        Py_DECREF(found);
        Py_RETURN_NONE;
    }
    const char *p = view.buf, *end = p + view.len;
    PyObject *prefix_held = Py_NewRef(self->prefix);
    const char *prefix = PyBytes_AS_STRING(prefix_held);
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix_held);
    p = skip_ws(p, end);
    if (p >= end || *p++ != '{')
        goto other;
    p = skip_ws(p, end);
    if (p < end && *p == '}') {
        p++;
        goto closed;
    }
    for (;;) {
        int escaped = 0;
        if (p >= end || *p++ != '"')
            goto other;
        const char *key = p;
        p = string_end(p, end, &escaped);
        if (p == NULL || escaped)
            goto other;
        Py_ssize_t klen = p - key;
        p = skip_ws(p + 1, end);
        if (p >= end || *p++ != ':')
            goto other;
        p = skip_ws(p, end);
        if (p >= end || *p++ != '"')
            goto other;
        const char *value = p;
        p = string_end(p, end, &escaped);
        if (p == NULL)
            goto other;
        Py_ssize_t vlen = p - value;
        p = skip_ws(p + 1, end);

        PyObject *name = lookup(self, key, klen);
        PyObject *made = NULL;
        if (name == NULL && klen >= plen && memcmp(key, prefix, plen) == 0)
            name = made = ascii_str(key, klen, 0);
        if (name != NULL) {
            PyObject *v = ascii_str(value, vlen, escaped);
            if (v == NULL || PyDict_SetItem(found, name, v) < 0) {
                Py_XDECREF(v);
                Py_XDECREF(made);
                goto error;
            }
            Py_DECREF(v);
            Py_XDECREF(made);
        }
        else if (PyErr_Occurred())
            goto error;

        if (p >= end)
            goto other;
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (*p++ == '}')
            break;
        goto other;
    }
closed:
    if (skip_ws(p, end) != end)
        goto other;
    Py_DECREF(prefix_held);
    PyBuffer_Release(&view);
    return found;
other:
    Py_DECREF(found);
    Py_DECREF(prefix_held);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    Py_DECREF(found);
    Py_DECREF(prefix_held);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef Picker_methods[] = {
    {"pick", (PyCFunction)Picker_pick, METH_O,
     "pick(body) -> dict of the wanted headers, or None: parse the whole body instead."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PickerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "channelsd_picker.Picker",
    .tp_doc = "Picker(names, prefix): picks those headers out of FreeSWITCH json events.",
    .tp_basicsize = sizeof(Picker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Picker_init,
    .tp_dealloc = (destructor)Picker_dealloc,
    .tp_methods = Picker_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "channelsd_picker",
    "The table's headers picked out of FreeSWITCH json events (see channelsd/eventpick.py).",
    -1, NULL,
};

PyMODINIT_FUNC
PyInit_channelsd_picker(void)
{
    if (PyType_Ready(&PickerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PickerType);
    if (PyModule_AddObject(m, "Picker", (PyObject *)&PickerType) < 0) {
        Py_DECREF(&PickerType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "SOURCE_SHA256", PICKER_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
