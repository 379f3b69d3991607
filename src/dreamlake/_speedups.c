/* The hot path of Track.append in C: the same logic as _agent/hotpath.py's Python twin.
 *
 * A Python method taking **kwargs spends about as long checking two values as the bare loop it is
 * compared with spends building its dict; here the check is a pointer comparison per field.
 *
 * Gate holds the queue's counters (shared by every track of a session). The GIL makes seq++ atomic;
 * `taken` and `threshold` are written from Python under the queue's lock and only read here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t seq;       /* tickets handed out */
    Py_ssize_t taken;     /* points that left memory (written, dropped or refused) */
    Py_ssize_t threshold; /* below it, ticket - taken goes straight to the deque */
} Gate;

static PyObject *Gate_reset(Gate *self, PyObject *Py_UNUSED(ignored)) {
    self->seq = 0;
    self->taken = 0;
    Py_RETURN_NONE;
}

static PyObject *Gate_next_ticket(Gate *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSsize_t(self->seq++);
}

static int Gate_init(Gate *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "", kwlist)) return -1;
    self->seq = 0;
    self->taken = 0;
    self->threshold = -1;
    return 0;
}

static PyMemberDef Gate_members[] = {
    {"taken", T_PYSSIZET, offsetof(Gate, taken), 0, "points that left memory"},
    {"threshold", T_PYSSIZET, offsetof(Gate, threshold), 0, "fast-path bound on ticket - taken"},
    {NULL},
};

static PyMethodDef Gate_methods[] = {
    {"reset", (PyCFunction)Gate_reset, METH_NOARGS, "Start counting from zero (a forked child)."},
    {"next_ticket", (PyCFunction)Gate_next_ticket, METH_NOARGS, "Hand out one ticket."},
    {NULL},
};

static PyTypeObject GateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dreamlake._speedups.Gate",
    .tp_doc = "Counters that bound the queue of one session.",
    .tp_basicsize = sizeof(Gate),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Gate_init,
    .tp_members = Gate_members,
    .tp_methods = Gate_methods,
};

typedef struct {
    PyObject_HEAD
    Gate *gate;
    PyObject *items_append; /* the bound append of the track's deque */
    PyObject *admit;        /* admit(fields, ticket): the queue's slow path */
    PyObject *normalize;    /* normalize(fields) -> JSON-ready copy, or raises */
    PyObject *done;         /* returned by the fast path: None, or a Ready for the async face */
} TrackCore;

static int is_scalar(PyObject *value) {
    PyTypeObject *type = Py_TYPE(value);
    return type == &PyFloat_Type || type == &PyLong_Type || type == &PyUnicode_Type ||
           type == &PyBool_Type || value == Py_None;
}

/* Send `fields` (a new reference, consumed) to the deque and return `done`, or return what the
 * queue's slow path admit() returns (for AsyncSession: something to await while the queue is full). */
static PyObject *enqueue(Gate *gate, PyObject *items_append, PyObject *admit, PyObject *done, PyObject *fields) {
    Py_ssize_t ticket = gate->seq++;
    PyObject *result;
    if (ticket - gate->taken < gate->threshold) {
        result = PyObject_CallOneArg(items_append, fields);
        if (result != NULL) {
            Py_DECREF(result);
            result = Py_NewRef(done);
        }
    } else {
        PyObject *py_ticket = PyLong_FromSsize_t(ticket);
        result = py_ticket == NULL ? NULL : PyObject_CallFunctionObjArgs(admit, fields, py_ticket, NULL);
        Py_XDECREF(py_ticket);
    }
    Py_DECREF(fields);
    return result;
}

/* Ready: an awaitable that is already done, returned by the fast path of the async face, so that
 * `await track.append(...)` costs one more C call, not a coroutine. */
typedef struct {
    PyObject_HEAD
} Ready;

static PyObject *Ready_await(PyObject *self) { return Py_NewRef(self); }

static PyObject *Ready_next(PyObject *self) { return NULL; /* exhausted at once: the await yields None */ }

static PyAsyncMethods Ready_async = {.am_await = Ready_await};

static PyTypeObject ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dreamlake._speedups.Ready",
    .tp_doc = "An awaitable that is already done.",
    .tp_basicsize = sizeof(Ready),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_as_async = &Ready_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = Ready_next,
};

static PyObject *TrackCore_append(TrackCore *self, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError,
                        "append() takes fields as keyword arguments, e.g. append(value=0.5, step=1)");
        return NULL;
    }
    PyObject *fields;
    if (kwargs == NULL) {
        fields = PyDict_New();
        if (fields == NULL) return NULL;
    } else {
        Py_INCREF(kwargs);
        fields = kwargs;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(fields, &pos, &key, &value)) {
        if (!is_scalar(value)) {
            PyObject *normalized = PyObject_CallOneArg(self->normalize, fields);
            Py_DECREF(fields);
            if (normalized == NULL) return NULL;
            fields = normalized;
            break;
        }
    }
    return enqueue(self->gate, self->items_append, self->admit, self->done, fields);
}

static int TrackCore_init(TrackCore *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"gate", "items_append", "admit", "normalize", "done", NULL};
    PyObject *gate, *items_append, *admit, *normalize, *done = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOO|O", kwlist, &GateType, &gate, &items_append,
                                     &admit, &normalize, &done))
        return -1;
    Py_XSETREF(self->gate, (Gate *)Py_NewRef(gate));
    Py_XSETREF(self->items_append, Py_NewRef(items_append));
    Py_XSETREF(self->admit, Py_NewRef(admit));
    Py_XSETREF(self->normalize, Py_NewRef(normalize));
    Py_XSETREF(self->done, Py_NewRef(done));
    return 0;
}

static int TrackCore_traverse(TrackCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->gate);
    Py_VISIT(self->items_append);
    Py_VISIT(self->admit);
    Py_VISIT(self->normalize);
    Py_VISIT(self->done);
    return 0;
}

static int TrackCore_clear(TrackCore *self) {
    Py_CLEAR(self->gate);
    Py_CLEAR(self->items_append);
    Py_CLEAR(self->admit);
    Py_CLEAR(self->normalize);
    Py_CLEAR(self->done);
    return 0;
}

static void TrackCore_dealloc(TrackCore *self) {
    PyObject_GC_UnTrack(self);
    TrackCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef TrackCore_methods[] = {
    {"append", (PyCFunction)(void (*)(void))TrackCore_append, METH_VARARGS | METH_KEYWORDS,
     "Queue one point (fire-and-forget)."},
    {NULL},
};

static PyTypeObject TrackCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dreamlake._speedups.TrackCore",
    .tp_doc = "The hot path of a track handle.",
    .tp_basicsize = sizeof(TrackCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)TrackCore_init,
    .tp_dealloc = (destructor)TrackCore_dealloc,
    .tp_traverse = (traverseproc)TrackCore_traverse,
    .tp_clear = (inquiry)TrackCore_clear,
    .tp_methods = TrackCore_methods,
};

/* LogCore.log(message, level="info", metadata=None, **extra): Session.log's common case in C.
 *
 * The fast path takes a str message, a level spelled as in `levels` (or None), metadata that is
 * None or a dict, and str-keyed scalar values in metadata and extra; it builds the queued entry
 * (see _jsonl.encode_log_lines) and enqueues it like TrackCore.append. Anything
 * else (a builder call without message, a bad level, nested values) goes to `slow(*args, **kwargs)`,
 * the Python implementation, which validates, normalizes and raises with a clear message. */
typedef struct {
    PyObject_HEAD
    Gate *gate;
    PyObject *items_append;
    PyObject *admit;
    PyObject *levels; /* dict: accepted spelling -> canonical level */
    PyObject *clock;  /* time.time */
    PyObject *slow;
    PyObject *done;   /* as in TrackCore */
} LogCore;

static PyObject *s_level, *s_message, *s_metadata, *s_info;  /* keyword names */
static PyObject *k_timestamp, *k_level, *k_message;           /* 0, 1, 2: keys of a queued entry */

static int is_key(PyObject *key, PyObject *interned) {
    return key == interned || (PyUnicode_CheckExact(key) && PyUnicode_Compare(key, interned) == 0);
}

/* Whether every key of `dict` is a str and every value a JSON scalar. */
static int flat_scalars(PyObject *dict) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value))
        if (!PyUnicode_CheckExact(key) || !is_scalar(value)) return 0;
    return 1;
}

static PyObject *LogCore_log(LogCore *self, PyObject *args, PyObject *kwargs) {
    Py_ssize_t nargs = PyTuple_GET_SIZE(args), extras = 0, pos = 0;
    PyObject *message = nargs > 0 ? PyTuple_GET_ITEM(args, 0) : NULL;
    PyObject *level = nargs > 1 ? PyTuple_GET_ITEM(args, 1) : NULL;
    PyObject *metadata = nargs > 2 ? PyTuple_GET_ITEM(args, 2) : NULL;
    PyObject *key, *value;
    if (nargs < 1 || nargs > 3 || !PyUnicode_CheckExact(message)) goto slow;
    if (kwargs != NULL) {
        while (PyDict_Next(kwargs, &pos, &key, &value)) {
            if (is_key(key, s_level)) {
                if (level != NULL) goto slow;
                level = value;
            } else if (is_key(key, s_metadata)) {
                if (metadata != NULL) goto slow;
                metadata = value;
            } else if (is_key(key, s_message) || !is_scalar(value)) {
                goto slow;
            } else {
                extras++;
            }
        }
    }
    PyObject *canonical = s_info;
    if (level != NULL) {
        if (level != Py_None && !PyUnicode_CheckExact(level)) goto slow;
        canonical = PyDict_GetItem(self->levels, level); /* str or None: hashing cannot fail */
        if (canonical == NULL) goto slow;
    }
    if (metadata == Py_None) metadata = NULL;
    if (metadata != NULL && (!PyDict_CheckExact(metadata) || !flat_scalars(metadata))) goto slow;

    /* One flat dict (see _jsonl.encode_log_lines): a copy of the metadata, the extra keywords, and
     * the entry's own fields under the int keys 0, 1, 2. */
    PyObject *entry = metadata != NULL ? PyDict_Copy(metadata) : PyDict_New();
    if (entry == NULL) return NULL;
    if (extras) {
        pos = 0;
        while (PyDict_Next(kwargs, &pos, &key, &value)) {
            if (is_key(key, s_level) || is_key(key, s_metadata)) continue;
            if (PyDict_SetItem(entry, key, value) < 0) goto fail;
        }
    }
    PyObject *timestamp = PyObject_CallNoArgs(self->clock);
    if (timestamp == NULL) goto fail;
    int failed = PyDict_SetItem(entry, k_timestamp, timestamp) < 0;
    Py_DECREF(timestamp);
    if (failed || PyDict_SetItem(entry, k_level, canonical) < 0 || PyDict_SetItem(entry, k_message, message) < 0)
        goto fail;
    return enqueue(self->gate, self->items_append, self->admit, self->done, entry);
fail:
    Py_DECREF(entry);
    return NULL;
slow:
    return PyObject_Call(self->slow, args, kwargs);
}

static PyObject *LogCore_put(LogCore *self, PyObject *entry) {
    Py_INCREF(entry);
    return enqueue(self->gate, self->items_append, self->admit, self->done, entry);
}

static int LogCore_init(LogCore *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"gate", "items_append", "admit", "levels", "clock", "slow", "done", NULL};
    PyObject *gate, *items_append, *admit, *levels, *clock, *slow, *done = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOO!OO|O", kwlist, &GateType, &gate, &items_append,
                                     &admit, &PyDict_Type, &levels, &clock, &slow, &done))
        return -1;
    Py_XSETREF(self->gate, (Gate *)Py_NewRef(gate));
    Py_XSETREF(self->items_append, Py_NewRef(items_append));
    Py_XSETREF(self->admit, Py_NewRef(admit));
    Py_XSETREF(self->levels, Py_NewRef(levels));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    Py_XSETREF(self->slow, Py_NewRef(slow));
    Py_XSETREF(self->done, Py_NewRef(done));
    return 0;
}

static int LogCore_traverse(LogCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->gate);
    Py_VISIT(self->items_append);
    Py_VISIT(self->admit);
    Py_VISIT(self->levels);
    Py_VISIT(self->clock);
    Py_VISIT(self->slow);
    Py_VISIT(self->done);
    return 0;
}

static int LogCore_clear(LogCore *self) {
    Py_CLEAR(self->gate);
    Py_CLEAR(self->items_append);
    Py_CLEAR(self->admit);
    Py_CLEAR(self->levels);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->done);
    return 0;
}

static void LogCore_dealloc(LogCore *self) {
    PyObject_GC_UnTrack(self);
    LogCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef LogCore_methods[] = {
    {"log", (PyCFunction)(void (*)(void))LogCore_log, METH_VARARGS | METH_KEYWORDS,
     "log(message=None, level='info', metadata=None, **extra)\n--\n\n"
     "Queue a log entry (fire-and-forget, like Track.append), or return a builder without message."},
    {"_log_put", (PyCFunction)LogCore_put, METH_O, "Queue a ready entry (the slow path's end)."},
    {NULL},
};

static PyTypeObject LogCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dreamlake._speedups.LogCore",
    .tp_doc = "The hot path of Session.log.",
    .tp_basicsize = sizeof(LogCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)LogCore_init,
    .tp_dealloc = (destructor)LogCore_dealloc,
    .tp_traverse = (traverseproc)LogCore_traverse,
    .tp_clear = (inquiry)LogCore_clear,
    .tp_methods = LogCore_methods,
};

/* Fifo: the queue of one track (or of the log entries), a ring buffer of references.
 *
 * Not tracked by the garbage collector, unlike a deque: every full collection visits each item of a
 * tracked container, and with half a million queued points that took ~15 ms (a cache miss per
 * point). Nothing queued can be part of a reference cycle through the Fifo: a point is either the
 * call's own dict of scalars or a tree that normalize() copied. */
typedef struct {
    PyObject_HEAD
    PyObject **items;
    Py_ssize_t capacity, head, size; /* items[head], items[head + 1], ... (mod capacity) */
} Fifo;

static int Fifo_grow(Fifo *self) {
    Py_ssize_t capacity = self->capacity ? self->capacity * 2 : 64;
    PyObject **items = PyMem_New(PyObject *, capacity);
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->size; i++) items[i] = self->items[(self->head + i) % self->capacity];
    PyMem_Free(self->items);
    self->items = items;
    self->capacity = capacity;
    self->head = 0;
    return 0;
}

static PyObject *Fifo_append(Fifo *self, PyObject *item) {
    if (self->size == self->capacity && Fifo_grow(self) < 0) return NULL;
    self->items[(self->head + self->size) % self->capacity] = Py_NewRef(item);
    self->size++;
    Py_RETURN_NONE;
}

static PyObject *Fifo_popleft(Fifo *self, PyObject *Py_UNUSED(ignored)) {
    if (self->size == 0) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty Fifo");
        return NULL;
    }
    PyObject *item = self->items[self->head];
    self->head = (self->head + 1) % self->capacity;
    self->size--;
    return item;
}

/* take(n): the n oldest items (or all, if fewer) as a list, in one call. */
static PyObject *Fifo_take(Fifo *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n > self->size) n = self->size;
    if (n < 0) n = 0;
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyList_SET_ITEM(out, i, self->items[self->head]); /* the reference moves to the list */
        self->head = (self->head + 1) % self->capacity;
    }
    self->size -= n;
    return out;
}

static void Fifo_release(Fifo *self) {
    PyObject **items = self->items;
    Py_ssize_t capacity = self->capacity, head = self->head, size = self->size;
    self->items = NULL;
    self->capacity = self->head = self->size = 0;
    for (Py_ssize_t i = 0; i < size; i++) Py_DECREF(items[(head + i) % capacity]);
    PyMem_Free(items);
}

static PyObject *Fifo_clear(Fifo *self, PyObject *Py_UNUSED(ignored)) {
    Fifo_release(self);
    Py_RETURN_NONE;
}

static Py_ssize_t Fifo_len(Fifo *self) { return self->size; }

static PyObject *Fifo_item(Fifo *self, Py_ssize_t i) {
    if (i < 0 || i >= self->size) {
        PyErr_SetString(PyExc_IndexError, "Fifo index out of range");
        return NULL;
    }
    return Py_NewRef(self->items[(self->head + i) % self->capacity]);
}

static void Fifo_dealloc(Fifo *self) {
    Fifo_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Fifo_methods[] = {
    {"append", (PyCFunction)Fifo_append, METH_O, "Add an item at the end."},
    {"popleft", (PyCFunction)Fifo_popleft, METH_NOARGS, "Remove and return the oldest item."},
    {"take", (PyCFunction)Fifo_take, METH_O, "Remove and return the n oldest items as a list."},
    {"clear", (PyCFunction)Fifo_clear, METH_NOARGS, "Remove every item."},
    {NULL},
};

static PySequenceMethods Fifo_sequence = {
    .sq_length = (lenfunc)Fifo_len,
    .sq_item = (ssizeargfunc)Fifo_item, /* negative indexes are made positive by the caller */
};

static PyTypeObject FifoType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dreamlake._speedups.Fifo",
    .tp_doc = "A first-in first-out queue of references, not tracked by the garbage collector.",
    .tp_basicsize = sizeof(Fifo),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Fifo_dealloc,
    .tp_as_sequence = &Fifo_sequence,
    .tp_methods = Fifo_methods,
};

/* Decimal digits of n at dst; returns how many were written (sprintf costs ~10x as much). */
static Py_ssize_t write_index(char *dst, Py_ssize_t n) {
    char digits[24];
    Py_ssize_t len = 0, written = 0;
    size_t u = n < 0 ? (size_t)0 - (size_t)n : (size_t)n;
    if (n < 0) dst[written++] = '-';
    do {
        digits[len++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (len) dst[written++] = digits[--len];
    return written;
}

/* frame_lines(first_index, blob): turn JSONL "{...}\n" lines (as msgspec's encode_lines writes them)
 * into '{"index":i,"data":{...}}\n' lines numbered from first_index, in one pass of memcpy. */
static PyObject *frame_lines(PyObject *module, PyObject *args) {
    Py_ssize_t index;
    Py_buffer blob;
    if (!PyArg_ParseTuple(args, "ny*", &index, &blob)) return NULL;
    const char *src = blob.buf, *end = src + blob.len;
    Py_ssize_t lines = 0;
    for (const char *p = src; (p = memchr(p, '\n', end - p)) != NULL; p++) lines++;
    static const char head[] = "{\"index\":", mid[] = ",\"data\":";
    const Py_ssize_t fixed = (Py_ssize_t)(sizeof(head) - 1 + sizeof(mid) - 1 + 1);
    PyObject *out = PyBytes_FromStringAndSize(NULL, blob.len + lines * (fixed + 20));
    if (out == NULL) {
        PyBuffer_Release(&blob);
        return NULL;
    }
    char *dst = PyBytes_AS_STRING(out);
    const char *line = src;
    for (const char *nl; (nl = memchr(line, '\n', end - line)) != NULL; line = nl + 1, index++) {
        memcpy(dst, head, sizeof(head) - 1);
        dst += sizeof(head) - 1;
        dst += write_index(dst, index);
        memcpy(dst, mid, sizeof(mid) - 1);
        dst += sizeof(mid) - 1;
        memcpy(dst, line, nl - line);
        dst += nl - line;
        *dst++ = '}';
        *dst++ = '\n';
    }
    PyBuffer_Release(&blob);
    if (_PyBytes_Resize(&out, dst - PyBytes_AS_STRING(out)) < 0) return NULL;
    return out;
}

static PyMethodDef module_methods[] = {
    {"frame_lines", frame_lines, METH_VARARGS, "Number JSONL lines as {\"index\": i, \"data\": line}."},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "dreamlake._speedups", "The compiled hot path of dreamlake.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&GateType) < 0 || PyType_Ready(&TrackCoreType) < 0 || PyType_Ready(&LogCoreType) < 0 ||
        PyType_Ready(&ReadyType) < 0 || PyType_Ready(&FifoType) < 0)
        return NULL;
    k_timestamp = PyLong_FromLong(0);
    k_level = PyLong_FromLong(1);
    k_message = PyLong_FromLong(2);
    s_level = PyUnicode_InternFromString("level");
    s_message = PyUnicode_InternFromString("message");
    s_metadata = PyUnicode_InternFromString("metadata");
    s_info = PyUnicode_InternFromString("info");
    if (!k_timestamp || !k_level || !k_message || !s_level || !s_message || !s_metadata || !s_info) return NULL;
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) return NULL;
    Py_INCREF(&GateType);
    if (PyModule_AddObject(module, "Gate", (PyObject *)&GateType) < 0) {
        Py_DECREF(&GateType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&TrackCoreType);
    if (PyModule_AddObject(module, "TrackCore", (PyObject *)&TrackCoreType) < 0) {
        Py_DECREF(&TrackCoreType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&LogCoreType);
    if (PyModule_AddObject(module, "LogCore", (PyObject *)&LogCoreType) < 0) {
        Py_DECREF(&LogCoreType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&ReadyType);
    if (PyModule_AddObject(module, "Ready", (PyObject *)&ReadyType) < 0) {
        Py_DECREF(&ReadyType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&FifoType);
    if (PyModule_AddObject(module, "Fifo", (PyObject *)&FifoType) < 0) {
        Py_DECREF(&FifoType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
