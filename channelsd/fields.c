/* channelsd_fields: the channel table's two loops over an event's headers, in C.
 *
 * Why: on the ingest path the table asks each event for ~30 headers, in the order of its
 * chains ("the first of these headers present"), compares each value with what the row holds
 * and keeps the new ones. As bytecode that loop was the largest part of applying an event
 * (BENCHMARKS.md, issue #16); here it is the same dictionary lookups and comparisons without
 * the interpreter between them.
 *
 * The contract: Fields.merge and Fields.details do exactly what merge_fields() and
 * pick_details() in channelsd/fields.py do (tests/test_fields.py runs both on every event of
 * the captures and on hypothesis events, hostile values included, and compares the rows, the
 * refusals and the results). Nothing here decides what a value may be beyond those functions:
 * a field naming a channel is checked by the `is_uuid` it was given, the one gate of channelsd.
 *
 * Safety: arguments are checked for their exact types before anything is read (a wrong one
 * raises TypeError, and the caller's Python loop is never skipped silently: the table only
 * calls this with what it built). A value is held (a new reference) from its lookup to its
 * last use, so nothing a collection runs meanwhile can free it under us. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifndef FIELDS_SOURCE_SHA256
#define FIELDS_SOURCE_SHA256 ""
#endif

typedef struct {
    PyObject_HEAD
    PyObject *shared;  /* the mode of a field whose new values are interned */
    PyObject *a_uuid;  /* the mode of a field naming a channel: is_uuid() or refused */
    PyObject *is_uuid; /* callable */
    Py_ssize_t max_chars;
} Fields;

static void
Fields_dealloc(Fields *self)
{
    Py_XDECREF(self->shared);
    Py_XDECREF(self->a_uuid);
    Py_XDECREF(self->is_uuid);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Fields_init(Fields *self, PyObject *args, PyObject *kwds)
{
    PyObject *shared, *a_uuid, *is_uuid;
    Py_ssize_t max_chars;
    static char *kwlist[] = {"shared", "a_uuid", "is_uuid", "max_chars", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOn", kwlist, &shared, &a_uuid, &is_uuid,
                                     &max_chars))
        return -1;
    if (!PyCallable_Check(is_uuid)) {
        PyErr_SetString(PyExc_TypeError, "is_uuid must be callable");
        return -1;
    }
    if (max_chars < 1) {
        PyErr_SetString(PyExc_ValueError, "max_chars must be positive");
        return -1;
    }
    PyObject *old[3] = {self->shared, self->a_uuid, self->is_uuid};
    Py_INCREF(shared);
    Py_INCREF(a_uuid);
    Py_INCREF(is_uuid);
    self->shared = shared;
    self->a_uuid = a_uuid;
    self->is_uuid = is_uuid;
    self->max_chars = max_chars;
    for (int i = 0; i < 3; i++)
        Py_XDECREF(old[i]);
    return 0;
}

/* refused[field] += 1 */
static int
refuse(PyObject *refused, PyObject *field)
{
    PyObject *count = PyDict_GetItemWithError(refused, field);
    PyObject *next;
    if (count == NULL) {
        if (PyErr_Occurred())
            return -1;
        next = PyLong_FromLong(1);
    }
    else {
        Py_INCREF(count);
        PyObject *one = PyLong_FromLong(1);
        next = one == NULL ? NULL : PyNumber_Add(count, one);
        Py_XDECREF(one);
        Py_DECREF(count);
    }
    if (next == NULL)
        return -1;
    int rc = PyDict_SetItem(refused, field, next);
    Py_DECREF(next);
    return rc;
}

/* channel.usable(): a str of 1..max_chars code points (the first of a list), as a new
 * reference; NULL for anything else (never an error). Steals nothing. */
static PyObject *
usable(PyObject *v, Py_ssize_t max_chars)
{
    if (PyList_CheckExact(v)) {
        if (PyList_GET_SIZE(v) == 0)
            return NULL;
        v = PyList_GET_ITEM(v, 0);
    }
    if (PyUnicode_CheckExact(v)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(v);
        if (n > 0 && n <= max_chars) {
            Py_INCREF(v);
            return v;
        }
    }
    return NULL;
}

/* `if v := event.get(header)`: 1 with *out a new reference to a true value, 0 for an absent
 * or false one, -1 on an error. */
static int
present(PyObject *event, PyObject *header, PyObject **out)
{
    PyObject *v = PyDict_GetItemWithError(event, header);
    if (v == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(v);
    int truth = PyObject_IsTrue(v);
    if (truth <= 0) {
        Py_DECREF(v);
        return truth;
    }
    *out = v;
    return 1;
}

/* Both methods end with (event: dict, a tuple, refused: dict): 1 when the call may go on. */
static int
checked(Fields *self, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage)
{
    if (self->is_uuid == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Fields was not initialised");
        return 0;
    }
    if (nargs != want || !PyDict_CheckExact(args[want - 3]) || !PyTuple_CheckExact(args[want - 2])
        || !PyDict_CheckExact(args[want - 1])) {
        PyErr_Format(PyExc_TypeError, "%s: the event a dict, then a tuple and a dict", usage);
        return 0;
    }
    return 1;
}

static PyObject *
Fields_merge(Fields *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!checked(self, args, nargs, 4, "merge(channel, event, chains, refused)"))
        return NULL;
    PyObject *ch = args[0], *event = args[1], *chains = args[2], *refused = args[3];
    /* Held: a finalizer run by a collection could otherwise drop the last reference. */
    Py_INCREF(event);
    Py_INCREF(chains);
    Py_INCREF(refused);
    long changed = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(chains);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyTuple_GET_ITEM(chains, i);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3
            || !PyUnicode_CheckExact(PyTuple_GET_ITEM(entry, 0))
            || !PyTuple_CheckExact(PyTuple_GET_ITEM(entry, 1))) {
            PyErr_SetString(PyExc_TypeError, "a chain is (field, (header, ...), mode)");
            goto error;
        }
        PyObject *attr = PyTuple_GET_ITEM(entry, 0);
        PyObject *chain = PyTuple_GET_ITEM(entry, 1);
        PyObject *mode = PyTuple_GET_ITEM(entry, 2);
        Py_ssize_t m = PyTuple_GET_SIZE(chain);
        for (Py_ssize_t j = 0; j < m; j++) {
            PyObject *v;
            int got = present(event, PyTuple_GET_ITEM(chain, j), &v);
            if (got <= 0) {
                if (got < 0)
                    goto error;
                continue;
            }
            if (!PyUnicode_CheckExact(v) || PyUnicode_GET_LENGTH(v) > self->max_chars) {
                PyObject *u = usable(v, self->max_chars);
                Py_DECREF(v);
                if (u == NULL) {
                    if (refuse(refused, attr) < 0)
                        goto error;
                    continue; /* as if absent: the next header of the chain may say */
                }
                v = u;
            }
            PyObject *held = PyObject_GetAttr(ch, attr);
            if (held == NULL) {
                Py_DECREF(v);
                goto error;
            }
            int differs = PyObject_RichCompareBool(v, held, Py_NE);
            Py_DECREF(held);
            if (differs < 0) {
                Py_DECREF(v);
                goto error;
            }
            if (differs) {
                if (mode == self->shared) {
                    PyUnicode_InternInPlace(&v);
                }
                else if (mode == self->a_uuid) {
                    PyObject *ok = PyObject_CallOneArg(self->is_uuid, v);
                    int valid = ok == NULL ? -1 : PyObject_IsTrue(ok);
                    Py_XDECREF(ok);
                    if (valid <= 0) {
                        Py_DECREF(v);
                        if (valid < 0 || refuse(refused, attr) < 0)
                            goto error;
                        break; /* refused: not the next header's to say */
                    }
                }
                if (PyObject_SetAttr(ch, attr, v) < 0) {
                    Py_DECREF(v);
                    goto error;
                }
                changed++;
            }
            Py_DECREF(v);
            break;
        }
    }
    Py_DECREF(event);
    Py_DECREF(chains);
    Py_DECREF(refused);
    return PyLong_FromLong(changed);
error:
    Py_DECREF(event);
    Py_DECREF(chains);
    Py_DECREF(refused);
    return NULL;
}

/* str.isascii() and str.isdigit() of a short str: 1..5 ASCII digits, as their value. */
static long
small_number(PyObject *v)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    if (n < 1 || n > 5 || PyUnicode_KIND(v) != PyUnicode_1BYTE_KIND)
        return -1;
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(v);
    long value = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        value = value * 10 + (s[i] - '0');
    }
    return value;
}

/* Whether `held` has every item of `found` (equal values): 1, 0, or -1 with an exception. */
static int
holds_all(PyObject *held, PyObject *found)
{
    Py_ssize_t pos = 0;
    PyObject *key, *v;
    while (PyDict_Next(found, &pos, &key, &v)) {
        /* Held while compared: a key's hash or a value's __eq__ may run Python code (the
         * table passes exact str, a caller need not), which may change `found` and free
         * what the walk lent (an outside attack did, through gc.get_referrers). */
        Py_INCREF(key);
        Py_INCREF(v);
        PyObject *kept = PyDict_GetItemWithError(held, key);
        int same = kept == NULL ? (PyErr_Occurred() ? -1 : 0) : 1;
        if (same > 0) {
            Py_INCREF(kept);
            same = PyObject_RichCompareBool(kept, v, Py_EQ);
            Py_DECREF(kept);
        }
        Py_DECREF(key);
        Py_DECREF(v);
        if (same <= 0)
            return same;
    }
    return 1;
}

static PyObject *
Fields_details(Fields *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!checked(self, args, nargs, 4, "details(held, event, details, refused)"))
        return NULL;
    PyObject *held = args[0], *event = args[1], *details = args[2], *refused = args[3];
    if (held != Py_None && !PyDict_CheckExact(held)) {
        PyErr_SetString(PyExc_TypeError, "details: held is a dict or None");
        return NULL;
    }
    PyObject *found = PyDict_New();
    if (found == NULL)
        return NULL;
    Py_INCREF(held);
    Py_INCREF(event);
    Py_INCREF(details);
    Py_INCREF(refused);
    Py_ssize_t n = PyTuple_GET_SIZE(details);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyTuple_GET_ITEM(details, i);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) {
            PyErr_SetString(PyExc_TypeError, "a detail is (key, header, numeric)");
            goto error;
        }
        PyObject *key = PyTuple_GET_ITEM(entry, 0);
        int numeric = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 2));
        if (numeric < 0)
            goto error;
        PyObject *v;
        int got = present(event, PyTuple_GET_ITEM(entry, 1), &v);
        if (got <= 0) {
            if (got < 0)
                goto error;
            continue;
        }
        int known = PyDict_Contains(found, key);
        if (known != 0) { /* the first header of a key that is present wins */
            Py_DECREF(v);
            if (known < 0)
                goto error;
            continue;
        }
        if (!PyUnicode_CheckExact(v) || PyUnicode_GET_LENGTH(v) > self->max_chars) {
            Py_DECREF(v);
            if (refuse(refused, key) < 0)
                goto error;
            continue;
        }
        if (numeric) {
            long value = small_number(v);
            Py_DECREF(v);
            if (value < 0) {
                if (refuse(refused, key) < 0)
                    goto error;
                continue;
            }
            v = PyLong_FromLong(value);
            if (v == NULL)
                goto error;
        }
        int rc = PyDict_SetItem(found, key, v);
        Py_DECREF(v);
        if (rc < 0)
            goto error;
    }
    if (held != Py_None) {
        int same = holds_all(held, found);
        if (same < 0)
            goto error;
        if (same) {
            Py_SETREF(found, Py_NewRef(Py_None));
        }
    }
    Py_DECREF(held);
    Py_DECREF(event);
    Py_DECREF(details);
    Py_DECREF(refused);
    return found;
error:
    Py_DECREF(found);
    Py_DECREF(held);
    Py_DECREF(event);
    Py_DECREF(details);
    Py_DECREF(refused);
    return NULL;
}

static PyMethodDef Fields_methods[] = {
    {"merge", (PyCFunction)(void (*)(void))Fields_merge, METH_FASTCALL,
     "merge(channel, event, chains, refused) -> how many fields changed"},
    {"details", (PyCFunction)(void (*)(void))Fields_details, METH_FASTCALL,
     "details(held, event, details, refused) -> dict of the details the event carries, or\n"
     "None when `held` (a dict, or None) has each of them already"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "channelsd_fields.Fields",
    .tp_doc = "Fields(shared, a_uuid, is_uuid, max_chars): the table's loops over headers.",
    .tp_basicsize = sizeof(Fields),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Fields_init,
    .tp_dealloc = (destructor)Fields_dealloc,
    .tp_methods = Fields_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "channelsd_fields",
    "The channel table's loops over an event's headers (see channelsd/fields.py).",
    -1, NULL,
};

PyMODINIT_FUNC
PyInit_channelsd_fields(void)
{
    if (PyType_Ready(&FieldsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FieldsType);
    if (PyModule_AddObject(m, "Fields", (PyObject *)&FieldsType) < 0) {
        Py_DECREF(&FieldsType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "SOURCE_SHA256", FIELDS_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
