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
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define BUCKETS 256
#define MAX_NAMES 4096
/* A pick's dict is presized for at most this many headers (a hostile event's thousands of
 * prefixed headers must not make every later dict that large). */
#define MAX_PRESIZE 64
/* Values up to this long are kept, one per wanted name, and given again while the next events
 * carry the same (see Picker.last); a longer value is made anew each time, so a hostile
 * switch's values cannot keep more than names x this many bytes alive. */
#define MAX_KEPT_VALUE 64

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
    uint64_t *tail;     /* each name's tail() */
    /* Each name's last value (a str of at most MAX_KEPT_VALUE, or NULL): most headers carry
     * what they carried in the previous event (a state, a codec, the channel's own uuid and
     * name: ~3 in 4 of the values picked from the burst capture), and that str is given
     * again instead of a new one made, and freed after the event is applied. The rows then
     * share those strings too. Values are exact, immutable str: sharing one changes nothing
     * a caller can see but `is`. */
    PyObject **last;
    uint64_t ptail;     /* the prefix's tail() */
    Py_ssize_t picked;  /* how many headers the last pick took: the next dict's size */
} Picker;

/* The last (up to) eight bytes of a name: header names of one family share their start
 * ("variable_sip_...") and differ at the end, so one compare of these tells most names
 * apart before memcmp is called (a miss in a hash chain, or a key that only starts like the
 * prefix: ~90 calls an event otherwise). */
static uint64_t
tail(const char *s, Py_ssize_t n)
{
    uint64_t t = 0;
    if (n >= 8) {
        memcpy(&t, s + n - 8, 8);
        return t;
    }
    memcpy(&t, s, (size_t)n);
    return t;
}

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

/* Drop the kept values (each an exact str: freeing one runs no Python code). */
static void
forget_last(PyObject **last, Py_ssize_t count)
{
    if (last == NULL)
        return;
    for (Py_ssize_t i = 0; i < count; i++)
        Py_XDECREF(last[i]);
    PyMem_Free(last);
}

static void
Picker_dealloc(Picker *self)
{
    Py_XDECREF(self->names);
    Py_XDECREF(self->prefix);
    PyMem_Free(self->next);
    PyMem_Free(self->tail);
    forget_last(self->last, self->count);
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
    uint64_t *tails = NULL;
    PyObject **last = NULL;
    int head[BUCKETS];
    Py_ssize_t count = PyTuple_GET_SIZE(given);
    if (count > MAX_NAMES) {
        PyErr_SetString(PyExc_ValueError, "too many header names");
        goto fail;
    }
    names = PyTuple_New(count);
    next = PyMem_Calloc(count ? count : 1, sizeof(int));
    tails = PyMem_Calloc(count ? count : 1, sizeof(uint64_t));
    last = PyMem_Calloc(count ? count : 1, sizeof(PyObject *));
    if (names == NULL || next == NULL || tails == NULL || last == NULL) {
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
        tails[i] = tail(s, n);
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
    uint64_t *old_tails = self->tail;
    PyObject **old_last = self->last;
    Py_ssize_t old_count = self->count;
    memcpy(self->head, head, sizeof head);
    self->names = names;
    self->prefix = prefix;
    self->next = next;
    self->tail = tails;
    self->last = last; /* sized for these names (a kept value is checked by its bytes) */
    self->ptail = tail(p, plen);
    self->count = count;
    Py_XDECREF(old_names);
    Py_XDECREF(old_prefix);
    PyMem_Free(old_next);
    PyMem_Free(old_tails);
    forget_last(old_last, old_count);
    return 0;
fail:
    Py_DECREF(given);
    Py_XDECREF(names);
    PyMem_Free(next);
    PyMem_Free(tails);
    PyMem_Free(last);
    return -1;
}

/* The index of the wanted name this key is, or -1. */
static int
lookup(Picker *self, const char *s, Py_ssize_t n)
{
    uint64_t t = tail(s, n);
    for (int i = self->head[bucket_of(s, n)]; i >= 0; i = self->next[i]) {
        PyObject *name = PyTuple_GET_ITEM(self->names, i);
        if (self->tail[i] == t && PyUnicode_GET_LENGTH(name) == n
            && memcmp(PyUnicode_DATA(name), s, n) == 0)
            return i;
    }
    return -1;
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

/* The value of wanted name i: the str it was last time when these are its bytes, or a new
 * one (kept for next time when short). A new reference, or NULL with an exception set. */
static PyObject *
value_of(Picker *self, int i, const char *s, Py_ssize_t n, int escaped)
{
    PyObject *kept = self->last[i];
    if (kept != NULL && !escaped && PyUnicode_GET_LENGTH(kept) == n
        && memcmp(PyUnicode_1BYTE_DATA(kept), s, n) == 0)
        return Py_NewRef(kept);
    PyObject *v = ascii_str(s, n, escaped);
    if (v != NULL && n <= MAX_KEPT_VALUE)
        Py_XSETREF(self->last[i], Py_NewRef(v));
    return v;
}

static const char *
skip_ws(const char *p, const char *end)
{
    /* FreeSWITCH writes compact JSON: one compare tells most bytes are no whitespace */
    while (p < end && (unsigned char)*p <= ' '
           && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* An empty dict with room for `n` items. _PyDict_NewPresized is CPython's own (what
 * BUILD_MAP and dict(**kw) use), exported but underscored: where a later CPython may not have
 * it, a dict that grows as it is filled, as PyDict_New's does. */
static PyObject *
new_dict(Py_ssize_t n)
{
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
    if (n > 5)
        return _PyDict_NewPresized(n < MAX_PRESIZE ? n : MAX_PRESIZE);
#else
    (void)n;
#endif
    return PyDict_New();
}

/* The picked dict of the body at p (len bytes), None, or NULL with an exception set;
 * *prefixed is set when a picked header's name starts with the prefix. */
static PyObject *
pick_span(Picker *self, const char *p, Py_ssize_t len, int *prefixed)
{
    /* First: it may start a collection, whose finalizers may call __init__ (see the top).
     * Sized for as many headers as the last pick took (events in a row are alike): grown
     * from empty, a ~24-header pick's dict is rebuilt three times (8, 16, 32, 64 slots). */
    PyObject *found = new_dict(self->picked);
    if (found == NULL)
        return NULL;
    const char *end = p + len;
    PyObject *prefix_held = Py_NewRef(self->prefix);
    const char *prefix = PyBytes_AS_STRING(prefix_held);
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix_held);
    uint64_t ptail = self->ptail;
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

        int index = lookup(self, key, klen);
        PyObject *name = index >= 0 ? PyTuple_GET_ITEM(self->names, index) : NULL;
        PyObject *made = NULL;
        int has_prefix = klen >= plen && tail(key, plen) == ptail
                         && memcmp(key, prefix, plen) == 0;
        if (name == NULL && has_prefix)
            name = made = ascii_str(key, klen, 0);
        if (name != NULL) {
            *prefixed |= has_prefix;
            PyObject *v = index >= 0 ? value_of(self, index, value, vlen, escaped)
                                     : ascii_str(value, vlen, escaped);
            if (v == NULL || PyDict_SetItem(found, name, v) < 0) {
                Py_XDECREF(v);
                Py_XDECREF(made);
                goto error;
            }
            Py_DECREF(v);
            Py_XDECREF(made);
        }
        else if (has_prefix) /* ascii_str failed (asked only when it was called) */
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
    self->picked = PyDict_GET_SIZE(found);
    return found;
other:
    Py_DECREF(found);
    Py_DECREF(prefix_held);
    Py_RETURN_NONE;
error:
    Py_DECREF(found);
    Py_DECREF(prefix_held);
    return NULL;
}

static int
initialised(Picker *self)
{
    if (self->names == NULL || self->prefix == NULL) {
        PyErr_SetString(PyExc_TypeError, "Picker.__init__ was not called");
        return 0;
    }
    return 1;
}

static PyObject *
Picker_pick(Picker *self, PyObject *arg)
{
    if (!initialised(self))
        return NULL;
    /* orjson reads these three (and str, which is no body of an event): anything else is
     * orjson's to judge, and so is a buffer that is not one run of bytes. */
    if (!PyBytes_CheckExact(arg) && !PyByteArray_CheckExact(arg) && !PyMemoryView_Check(arg))
        Py_RETURN_NONE;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        /* not C-contiguous, released: orjson's to judge */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    int prefixed = 0;
    PyObject *found = pick_span(self, view.buf, view.len, &prefixed);
    PyBuffer_Release(&view);
    return found;
}

/* cut(): the outer headers FreeSWITCH gives every json event, around the body's length. */
static const char JSON_HEAD[] = "Content-Length: ";
static const char JSON_TAIL[] = "\nContent-Type: text/event-json\n\n";
#define JSON_HEAD_LEN ((Py_ssize_t)sizeof JSON_HEAD - 1)
#define JSON_TAIL_LEN ((Py_ssize_t)sizeof JSON_TAIL - 1)
#define MAX_DIGITS 12

static PyObject *event_name_key; /* "Event-Name", interned at import */
static PyObject *empty;          /* b"" */

/* Whether a picked event is one the caller's table reads: its Event-Name an exact str that
 * starts with `kind_prefix` or is in `kinds` (no Python code runs: exact str, C's hash). */
static int
wanted_kind(PyObject *picked, PyObject *kind_prefix, PyObject *kinds)
{
    PyObject *name = PyDict_GetItemWithError(picked, event_name_key);
    if (name == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_CheckExact(name))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(name), k = PyUnicode_GET_LENGTH(kind_prefix);
    if (PyUnicode_KIND(name) == PyUnicode_1BYTE_KIND && n >= k
        && PyUnicode_KIND(kind_prefix) == PyUnicode_1BYTE_KIND
        && memcmp(PyUnicode_DATA(name), PyUnicode_DATA(kind_prefix), k) == 0)
        return 1;
    return PySet_Contains(kinds, name);
}

/* The length of the json event frame at p, its body starting at *body; -1 when the bytes at
 * p are not (or not yet, or not only) such a frame: the caller's general framing decides. */
static Py_ssize_t
json_frame(const char *p, const char *end, Py_ssize_t max_body, const char **body)
{
    if (end - p < JSON_HEAD_LEN || memcmp(p, JSON_HEAD, JSON_HEAD_LEN) != 0)
        return -1;
    p += JSON_HEAD_LEN;
    Py_ssize_t length = 0, digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        length = length * 10 + (*p++ - '0');
        if (++digits > MAX_DIGITS || length > max_body)
            return -1; /* the general framing refuses it, or reads past it */
    }
    if (digits == 0 || end - p < JSON_TAIL_LEN
        || memcmp(p, JSON_TAIL, JSON_TAIL_LEN) != 0)
        return -1;
    p += JSON_TAIL_LEN;
    if (end - p < length)
        return -1;
    *body = p;
    return length;
}

static PyObject *
Picker_cut(Picker *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!initialised(self))
        return NULL;
    if (nargs != 7 || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1])
        || !PyLong_CheckExact(args[2]) || !PyLong_CheckExact(args[3])
        || !PyLong_CheckExact(args[4]) || !PyUnicode_CheckExact(args[5])
        || !PyFrozenSet_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "cut(buf: bytes, pos: int, budget: int, shift: int, max_body: int, "
                        "kind_prefix: str, kinds: frozenset)");
        return NULL;
    }
    PyObject *buf = args[0], *kind_prefix = args[5], *kinds = args[6];
    Py_ssize_t ints[4]; /* pos, budget, shift, max_body: each checked before the next */
    for (int i = 0; i < 4; i++)
        if ((ints[i] = PyLong_AsSsize_t(args[i + 1])) == -1 && PyErr_Occurred())
            return NULL;
    Py_ssize_t pos = ints[0], budget = ints[1], shift = ints[2], max_body = ints[3];
    Py_ssize_t size = PyBytes_GET_SIZE(buf);
    if (pos < 0 || pos > size || shift < 0 || shift > 62 || max_body < 0) {
        PyErr_SetString(PyExc_ValueError, "cut: pos, shift or max_body out of range");
        return NULL;
    }
    PyObject *picks = PyList_New(0), *bodies = PyList_New(0), *hints = PyList_New(0);
    if (picks == NULL || bodies == NULL || hints == NULL)
        goto error;
    /* buf is an exact bytes, immutable and held by the caller: these pointers stay valid. */
    const char *start = PyBytes_AS_STRING(buf), *end = start + size;
    while (budget > 0) {
        const char *at;
        Py_ssize_t length = json_frame(start + pos, end, max_body, &at);
        if (length < 0)
            break;
        PyObject *body = PyBytes_FromStringAndSize(at, length);
        if (body == NULL)
            goto error;
        int added = PyList_Append(bodies, body);
        Py_DECREF(body); /* bodies holds it */
        if (added < 0)
            goto error;
        int prefixed = 0;
        PyObject *picked = pick_span(self, at, length, &prefixed);
        if (picked == NULL)
            goto error;
        if (picked != Py_None) {
            int wanted = wanted_kind(picked, kind_prefix, kinds);
            if (wanted <= 0) {
                Py_DECREF(picked);
                if (wanted < 0)
                    goto error;
                picked = Py_NewRef(Py_None);
            }
        }
        added = PyList_Append(picks, picked);
        if (added == 0) {
            /* A picked event's hint says what the picker saw: b"" when no header has the
             * prefix, None when one does (the table reads the pick's headers, not the body:
             * a search of ~2.5 KB for the prefix would only find it). */
            PyObject *hint = picked == Py_None ? body : prefixed ? Py_None : empty;
            added = PyList_Append(hints, hint);
        }
        Py_DECREF(picked);
        if (added < 0)
            goto error;
        pos = (at - start) + length;
        budget -= 1 + (length >> shift);
    }
    return Py_BuildValue("(NNNn)", picks, bodies, hints, pos);
error:
    Py_XDECREF(picks);
    Py_XDECREF(bodies);
    Py_XDECREF(hints);
    return NULL;
}

static PyMethodDef Picker_methods[] = {
    {"pick", (PyCFunction)Picker_pick, METH_O,
     "pick(body) -> dict of the wanted headers, or None: parse the whole body instead."},
    {"cut", (PyCFunction)(void (*)(void))Picker_cut, METH_FASTCALL,
     "cut(buf, pos, budget, shift, max_body, kind_prefix, kinds) -> (picks, bodies, hints,\n"
     "pos): the json event frames in a row at buf[pos:], each body's pick (None: not a\n"
     "wanted kind or not the plain case, parse it whole) and hint (b\"\" for a pick without\n"
     "a header of the prefix, None for one with, the body for a None pick), until `budget`\n"
     "frames (one more per 2**shift bytes of a body) or the first bytes that are not a whole\n"
     "json event frame."},
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
    event_name_key = PyUnicode_InternFromString("Event-Name");
    empty = PyBytes_FromStringAndSize(NULL, 0);
    if (event_name_key == NULL || empty == NULL)
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
