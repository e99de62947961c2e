/* channelsd_sendmany: write a publish's bytes to many sockets in one call, without the
 * interpreter lock.
 *
 * Why: a publish to a crowd of subscribers on one account is a thousand sends of the same
 * bytes. The kernel's part of them (copying, the loopback's delivery, waking each reader) was
 * what remained of the crowd's cost to ingest (BENCHMARKS.md, issue #16); channelsd/sendmany.py
 * runs this in a native thread so that it happens on another core while the hub goes on.
 *
 * The contract (held by tests/test_sendmany.py against socket pairs): send_each(fds, datas)
 * takes two sequences of the same length, file descriptors and bytes-like objects, and returns
 * a list with one int per pair: how many bytes of the data the socket took (it stops at the
 * first short write: EAGAIN, or the socket full), or -errno when it took none and the error
 * was not EAGAIN. Every send is MSG_DONTWAIT | MSG_NOSIGNAL: it never waits and never raises
 * SIGPIPE. A descriptor that is not a socket, or a bad one, is its own -errno, never anyone
 * else's failure.
 *
 * Memory safety: every buffer is acquired (so held alive and unmovable) before the lock is
 * released and released after it is taken again; the arrays are this call's own. The caller
 * keeps each descriptor open for the call (channelsd/sendmany.py's Courier holds that).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef SENDMANY_SOURCE_SHA256
#define SENDMANY_SOURCE_SHA256 ""
#endif

static Py_ssize_t
send_one(int fd, const char *buf, Py_ssize_t len)
{
    Py_ssize_t off = 0;
    while (off < len) {
        ssize_t r = send(fd, buf + off, (size_t)(len - off), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (off > 0 || errno == EAGAIN || errno == EWOULDBLOCK)
                return off; /* taken so far; a real error shows on the next write */
            return -(Py_ssize_t)errno;
        }
        if (r == 0)
            return off;
        off += r;
    }
    return off;
}

static PyObject *
send_each(PyObject *self, PyObject *args)
{
    PyObject *fds_arg, *datas_arg;
    if (!PyArg_ParseTuple(args, "OO:send_each", &fds_arg, &datas_arg))
        return NULL;
    PyObject *fds = PySequence_Fast(fds_arg, "fds must be a sequence");
    if (fds == NULL)
        return NULL;
    PyObject *datas = PySequence_Fast(datas_arg, "datas must be a sequence");
    if (datas == NULL) {
        Py_DECREF(fds);
        return NULL;
    }
    PyObject *result = NULL;
    int *fd = NULL;
    Py_buffer *bufs = NULL;
    Py_ssize_t *sent = NULL;
    Py_ssize_t held = 0; /* buffers acquired so far */
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fds);
    if (PySequence_Fast_GET_SIZE(datas) != n) {
        PyErr_SetString(PyExc_ValueError, "fds and datas differ in length");
        goto done;
    }
    fd = PyMem_Malloc(sizeof(int) * (size_t)(n ? n : 1));
    bufs = PyMem_Malloc(sizeof(Py_buffer) * (size_t)(n ? n : 1));
    sent = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    if (fd == NULL || bufs == NULL || sent == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PySequence_Fast_GET_ITEM(fds, i);
        if (!PyLong_Check(f)) {
            PyErr_SetString(PyExc_TypeError, "a file descriptor is an int");
            goto done;
        }
        long v = PyLong_AsLong(f);
        if (v == -1 && PyErr_Occurred())
            goto done;
        if (v < 0 || v > INT_MAX) {
            PyErr_SetString(PyExc_ValueError, "a file descriptor is a non-negative int");
            goto done;
        }
        fd[i] = (int)v;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(datas, i), &bufs[i], PyBUF_SIMPLE) < 0)
            goto done;
        held++;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        sent[i] = send_one(fd[i], (const char *)bufs[i].buf, bufs[i].len);
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromSsize_t(sent[i]);
        if (v == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, v);
    }
done:
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&bufs[i]);
    PyMem_Free(fd);
    PyMem_Free(bufs);
    PyMem_Free(sent);
    Py_DECREF(fds);
    Py_DECREF(datas);
    return result;
}

static PyMethodDef methods[] = {
    {"send_each", send_each, METH_VARARGS,
     "send_each(fds, datas) -> list[int]: each data to its socket without waiting; bytes "
     "taken, or -errno."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "channelsd_sendmany",
    "A publish's bytes to many sockets in one call (see channelsd/sendmany.py).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit_channelsd_sendmany(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddStringConstant(m, "SOURCE_SHA256", SENDMANY_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
