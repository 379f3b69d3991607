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
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t seq;            /* tickets handed out */
    Py_ssize_t taken;          /* points that left memory (written, dropped or refused) */
    Py_ssize_t threshold;      /* below it, ticket - taken goes straight to the deque */
    Py_ssize_t bytes;          /* estimated bytes held (see point_bytes), queued or being written */
    Py_ssize_t byte_threshold; /* ... and below this, too */
} Gate;

static PyObject *Gate_reset(Gate *self, PyObject *Py_UNUSED(ignored)) {
    self->seq = 0;
    self->taken = 0;
    self->bytes = 0;
    Py_RETURN_NONE;
}

/* add_bytes(n): a C call, so that it is atomic under the GIL against the hot path's own += */
static PyObject *Gate_add_bytes(Gate *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    self->bytes += n;
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
    self->bytes = 0;
    self->byte_threshold = PY_SSIZE_T_MAX;
    return 0;
}

static PyMemberDef Gate_members[] = {
    {"taken", T_PYSSIZET, offsetof(Gate, taken), 0, "points that left memory"},
    {"threshold", T_PYSSIZET, offsetof(Gate, threshold), 0, "fast-path bound on ticket - taken"},
    {"bytes", T_PYSSIZET, offsetof(Gate, bytes), READONLY, "estimated bytes held"},
    {"byte_threshold", T_PYSSIZET, offsetof(Gate, byte_threshold), 0, "fast-path bound on bytes"},
    {NULL},
};

static PyMethodDef Gate_methods[] = {
    {"reset", (PyCFunction)Gate_reset, METH_NOARGS, "Start counting from zero (a forked child)."},
    {"next_ticket", (PyCFunction)Gate_next_ticket, METH_NOARGS, "Hand out one ticket."},
    {"add_bytes", (PyCFunction)Gate_add_bytes, METH_O, "Add n (may be negative) to the bytes held."},
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

/* The Fifo (below) a hot path appends to directly when its items_append is a Fifo's append. */
static PyTypeObject FifoType;
static PyObject *Fifo_append(PyObject *self, PyObject *item);
static int fifo_add(PyObject *fifo, PyObject *item, Py_ssize_t bytes, int record);

static PyObject *fifo_of(PyObject *items_append) {
    if (!PyCFunction_Check(items_append) || PyCFunction_GET_FUNCTION(items_append) != (PyCFunction)Fifo_append)
        return NULL;
    PyObject *self = PyCFunction_GET_SELF(items_append);
    return self != NULL && Py_IS_TYPE(self, &FifoType) ? self : NULL;
}

typedef struct {
    PyObject_HEAD
    Gate *gate;
    PyObject *items_append; /* the bound append of the track's deque */
    PyObject *fifo;         /* ... if it is a Fifo's: that Fifo (borrowed through items_append) */
    PyObject *admit;        /* admit([owner,] fields, ticket): the queue's slow path */
    PyObject *normalize;    /* normalize(fields) -> JSON-ready copy, or raises */
    PyObject *done;         /* returned by the fast path: None, or a Ready for the async face */
    PyObject *owner;        /* admit's first argument (the track's buffer), or NULL: none; so
                               that admit is the queue's own method, not a partial per track */
} TrackCore;

static int is_scalar(PyObject *value) {
    PyTypeObject *type = Py_TYPE(value);
    return type == &PyFloat_Type || type == &PyLong_Type || type == &PyUnicode_Type ||
           type == &PyBool_Type || value == Py_None;
}

/* The estimate of the memory a queued point holds (the same as _agent/hotpath.py's py_point_bytes):
 * CPython's own sizes, rounded up to the allocator's 16-byte blocks, for a dict of str keys (its keys
 * are the caller's, shared, and not counted), a float, an int and an ASCII str, so a point of scalars
 * is counted exactly; a non-ASCII str at 4 bytes a character, a list at 9 bytes a slot (a list built
 * by appending has ~1/8 spare), plus what each holds. Whatever else (the agent's own items) counts as
 * OTHER_BYTES. It depends on nothing that changes while the point is queued (not the UTF-8 copy the
 * spool makes of a str), so what is added at admission is what is taken away when the point leaves. */
#define SLOT_BYTES 8   /* the point's place in its Fifo */
#define OTHER_BYTES 64
#define BLOCK(n) (((n) + 15) & ~(Py_ssize_t)15)

static Py_ssize_t dict_bytes(Py_ssize_t n) {
    if (n == 0) return 64;
    Py_ssize_t slots = 8;
    while (slots * 2 / 3 < n) slots *= 2;
    Py_ssize_t index = slots <= 128 ? 1 : slots <= 0x8000 ? 2 : 4;
    return 64 + BLOCK(32 + slots * index + (slots * 2 / 3) * 16); /* the dict, then its table */
}

static Py_ssize_t scalar_bytes(PyObject *value) {
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyFloat_Type) return 32;
    if (type == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) return 48;
        if (v >= -5 && v <= 256) return 0; /* shared small ints */
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        return u < (1ULL << 60) ? 32 : 48;
    }
    if (type == &PyUnicode_Type) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(value);
        return BLOCK(PyUnicode_IS_ASCII(value) ? 49 + len : 76 + 4 * len);
    }
    return 0; /* None, True, False */
}

static Py_ssize_t value_bytes(PyObject *value) {
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyList_Type || type == &PyTuple_Type) {
        Py_ssize_t n = Py_SIZE(value), total = 64 + BLOCK(9 * n);
        PyObject **items = type == &PyList_Type ? ((PyListObject *)value)->ob_item : ((PyTupleObject *)value)->ob_item;
        for (Py_ssize_t i = 0; i < n; i++) total += value_bytes(items[i]);
        return total;
    }
    if (type == &PyDict_Type) {
        Py_ssize_t pos = 0, total = dict_bytes(PyDict_GET_SIZE(value));
        PyObject *key, *item;
        while (PyDict_Next(value, &pos, &key, &item)) total += value_bytes(item);
        return total;
    }
    if (value == Py_None || type == &PyBool_Type || type == &PyFloat_Type || type == &PyLong_Type ||
        type == &PyUnicode_Type)
        return scalar_bytes(value);
    return OTHER_BYTES;
}

static Py_ssize_t point_bytes(PyObject *point) { return SLOT_BYTES + value_bytes(point); }

static PyObject *py_point_bytes(PyObject *module, PyObject *point) { return PyLong_FromSsize_t(point_bytes(point)); }

/* points_bytes(list): the sum of point_bytes over a list, in one call (the agent's take). */
static PyObject *py_points_bytes(PyObject *module, PyObject *points) {
    if (!PyList_Check(points)) {
        PyErr_SetString(PyExc_TypeError, "points_bytes() takes a list");
        return NULL;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(points); i++) total += point_bytes(PyList_GET_ITEM(points, i));
    return PyLong_FromSsize_t(total);
}

/* Send `fields` (a new reference, consumed) to the deque and return `done`, or return what the
 * queue's slow path admit() returns (for AsyncSession: something to await while the queue is full). */
static PyObject *enqueue(Gate *gate, PyObject *items_append, PyObject *fifo, PyObject *admit, PyObject *owner,
                         PyObject *done, PyObject *fields, Py_ssize_t size) {
    Py_ssize_t ticket = gate->seq++;
    PyObject *result;
    if (ticket - gate->taken < gate->threshold && gate->bytes < gate->byte_threshold) {
        int queued;
        if (fifo != NULL) { /* the Fifo keeps the size, so the agent need not walk the point again */
            queued = fifo_add(fifo, fields, size, 1);
        } else {
            result = PyObject_CallOneArg(items_append, fields);
            queued = result == NULL ? -1 : result != Py_False;
            Py_XDECREF(result);
        }
        if (queued == 0) goto slow; /* the spool is full: the slow path applies on_full */
        if (queued < 0) {
            result = NULL;
        } else {
            gate->bytes += size;
            result = Py_NewRef(done);
        }
    } else {
    slow:;
        PyObject *py_ticket = PyLong_FromSsize_t(ticket);
        result = py_ticket == NULL ? NULL
                 : owner == NULL   ? PyObject_CallFunctionObjArgs(admit, fields, py_ticket, NULL)
                                   : PyObject_CallFunctionObjArgs(admit, owner, fields, py_ticket, NULL);
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
    Py_ssize_t pos = 0, size = SLOT_BYTES + dict_bytes(PyDict_GET_SIZE(fields));
    PyObject *key, *value;
    while (PyDict_Next(fields, &pos, &key, &value)) {
        if (!is_scalar(value)) {
            PyObject *normalized = PyObject_CallOneArg(self->normalize, fields);
            Py_DECREF(fields);
            if (normalized == NULL) return NULL;
            fields = normalized;
            size = point_bytes(fields);
            break;
        }
        size += scalar_bytes(value);
    }
    return enqueue(self->gate, self->items_append, self->fifo, self->admit, self->owner, self->done, fields, size);
}

static int TrackCore_init(TrackCore *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"gate", "items_append", "admit", "normalize", "done", "owner", NULL};
    PyObject *gate, *items_append, *admit, *normalize, *done = Py_None, *owner = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOO|OO", kwlist, &GateType, &gate, &items_append,
                                     &admit, &normalize, &done, &owner))
        return -1;
    Py_XSETREF(self->owner, owner == Py_None ? NULL : Py_NewRef(owner));
    Py_XSETREF(self->gate, (Gate *)Py_NewRef(gate));
    Py_XSETREF(self->items_append, Py_NewRef(items_append));
    self->fifo = fifo_of(items_append);
    Py_XSETREF(self->admit, Py_NewRef(admit));
    Py_XSETREF(self->normalize, Py_NewRef(normalize));
    Py_XSETREF(self->done, Py_NewRef(done));
    return 0;
}

static int TrackCore_traverse(TrackCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->owner);
    Py_VISIT(self->gate);
    Py_VISIT(self->items_append);
    Py_VISIT(self->admit);
    Py_VISIT(self->normalize);
    Py_VISIT(self->done);
    return 0;
}

static int TrackCore_clear(TrackCore *self) {
    Py_CLEAR(self->owner);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->items_append);
    self->fifo = NULL;
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
    PyObject *fifo; /* as in TrackCore */
    PyObject *admit;
    PyObject *levels; /* dict: accepted spelling -> canonical level */
    PyObject *clock;  /* time.time */
    PyObject *slow;
    PyObject *done;   /* as in TrackCore */
    PyObject *tracks;      /* dict: name -> handle, of the names track_slow has checked */
    PyObject *track_slow;  /* track_slow(*args, **kwargs): Session._track_slow */
    PyObject *last_name, *last_track; /* the last hit: a loop passes the same str object each time */
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
    return enqueue(self->gate, self->items_append, self->fifo, self->admit, NULL, self->done, entry,
                   point_bytes(entry));
fail:
    Py_DECREF(entry);
    return NULL;
slow:
    return PyObject_Call(self->slow, args, kwargs);
}

static PyObject *LogCore_put(LogCore *self, PyObject *entry) {
    Py_INCREF(entry);
    return enqueue(self->gate, self->items_append, self->fifo, self->admit, NULL, self->done, entry,
                   point_bytes(entry));
}

/* track(name, ...): the docs' `session.track(name).append(...)` in a loop. A plain str name seen before
 * is one dict lookup; anything else (a new name, descriptive fields, another type) goes to
 * track_slow, which checks the name and makes the handle. */
static PyObject *LogCore_track(LogCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (nargs == 1 && kwnames == NULL && self->tracks != NULL && PyUnicode_CheckExact(args[0])) {
        if (args[0] == self->last_name) return Py_NewRef(self->last_track); /* a handle never changes */
        PyObject *track = PyDict_GetItemWithError(self->tracks, args[0]);
        if (track != NULL) {
            Py_XSETREF(self->last_name, Py_NewRef(args[0]));
            Py_XSETREF(self->last_track, Py_NewRef(track));
            return Py_NewRef(track);
        }
        if (PyErr_Occurred()) return NULL;
    }
    if (self->track_slow == NULL) {
        PyErr_SetString(PyExc_TypeError, "this object has no tracks");
        return NULL;
    }
    return PyObject_Vectorcall(self->track_slow, args, nargs, kwnames);
}

static int LogCore_init(LogCore *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"gate", "items_append", "admit", "levels", "clock", "slow", "done", "tracks",
                             "track_slow", NULL};
    PyObject *gate, *items_append, *admit, *levels, *clock, *slow, *done = Py_None, *tracks = NULL,
             *track_slow = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOO!OO|OO!O", kwlist, &GateType, &gate, &items_append,
                                     &admit, &PyDict_Type, &levels, &clock, &slow, &done, &PyDict_Type,
                                     &tracks, &track_slow))
        return -1;
    Py_XSETREF(self->tracks, Py_XNewRef(tracks));
    Py_XSETREF(self->track_slow, Py_XNewRef(track_slow));
    Py_XSETREF(self->gate, (Gate *)Py_NewRef(gate));
    Py_XSETREF(self->items_append, Py_NewRef(items_append));
    self->fifo = fifo_of(items_append);
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
    Py_VISIT(self->tracks);
    Py_VISIT(self->track_slow);
    Py_VISIT(self->last_track);
    return 0;
}

static int LogCore_clear(LogCore *self) {
    Py_CLEAR(self->gate);
    Py_CLEAR(self->items_append);
    self->fifo = NULL;
    Py_CLEAR(self->admit);
    Py_CLEAR(self->levels);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->done);
    Py_CLEAR(self->tracks);
    Py_CLEAR(self->track_slow);
    Py_CLEAR(self->last_name);
    Py_CLEAR(self->last_track);
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
    {"track", (PyCFunction)(void (*)(void))LogCore_track, METH_FASTCALL | METH_KEYWORDS,
     "track(name, *, description=None, tags=None, metadata=None)\n--\n\n"
     "Return the handle of track name (cheap: a name seen before is one dict lookup); descriptive "
     "fields given here are stored with it."},
    {NULL},
};

static PyTypeObject LogCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dreamlake._speedups.LogCore",
    .tp_doc = "The hot paths of a session: Session.log and Session.track.",
    .tp_basicsize = sizeof(LogCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)LogCore_init,
    .tp_dealloc = (destructor)LogCore_dealloc,
    .tp_traverse = (traverseproc)LogCore_traverse,
    .tp_clear = (inquiry)LogCore_clear,
    .tp_methods = LogCore_methods,
};

/* Spool: the write-ahead copy of accepted points, in a file mapped MAP_SHARED (see _agent/spool.py).
 *
 * Pages written into a shared file mapping belong to the page cache, so they outlive a killed
 * process: Fifo.append encodes each item here before queueing it, and a later process recovers
 * what the agent had not written. Records live in one of two halves; the agent rotates halves and
 * frees a half once every record in it is written. Every record starts with one 8-byte word
 * (length, epoch of its half) stored last, so a record is either whole or absent after a kill, and
 * a record left from an earlier use of the half carries an older epoch.
 *
 * Record: u32 length (8-aligned, header included), u32 epoch, u32 track, u16 fields, u16 0, u64 seq;
 * then per field: u16 key id, u8 type, and 8 raw bytes (int, float) or u32 length + bytes (str,
 * packed) or nothing (None, False, True). Packed is the fallback encoding of any other value. */
enum { V_NONE, V_FALSE, V_TRUE, V_INT, V_FLOAT, V_STR, V_PACKED };
#define RECORD_HEAD 24
#define MAX_FIELDS 64
#define KEY_CACHE 8

typedef struct {
    PyObject_HEAD
    Py_buffer view;      /* the mapping, held until release() */
    char *halves[2];     /* first byte of each half's records */
    uint64_t *epochs;    /* the two epochs in the file's header; 0: the half is free */
    Py_ssize_t half_bytes;
    int active;          /* the half being written */
    Py_ssize_t pos;      /* bytes used in the active half */
    PyObject *keys;      /* field key -> id */
    PyObject *define;    /* define(key) -> id: records a new key before any record uses it */
    PyObject *pack;      /* pack(value) -> bytes: the fallback encoding */
    Py_ssize_t skipped;  /* items that could not be encoded (queued, not spooled) */
    PyObject *cached_keys[KEY_CACHE]; /* the key last seen at each field position (strong refs) */
    uint16_t cached_ids[KEY_CACHE];
} Spool;

static int Spool_init(Spool *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"mapping", "epochs_at", "halves_at", "half_bytes", "keys", "define", "pack", NULL};
    PyObject *mapping, *keys, *define, *pack;
    Py_ssize_t epochs_at, halves_at, half_bytes;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnnO!OO", kwlist, &mapping, &epochs_at, &halves_at,
                                     &half_bytes, &PyDict_Type, &keys, &define, &pack))
        return -1;
    if (self->view.buf != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Spool is already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(mapping, &self->view, PyBUF_WRITABLE) < 0) return -1;
    if (epochs_at < 0 || epochs_at % 8 || halves_at % 8 || half_bytes % 8 || half_bytes < 4096 ||
        halves_at < epochs_at + 16 || halves_at + 2 * half_bytes > self->view.len) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "spool layout does not fit the mapping");
        return -1;
    }
    char *base = self->view.buf;
    self->epochs = (uint64_t *)(base + epochs_at);
    self->halves[0] = base + halves_at;
    self->halves[1] = base + halves_at + half_bytes;
    self->half_bytes = half_bytes;
    self->active = self->epochs[1] > self->epochs[0];
    self->pos = 0;
    Py_XSETREF(self->keys, Py_NewRef(keys));
    Py_XSETREF(self->define, Py_NewRef(define));
    Py_XSETREF(self->pack, Py_NewRef(pack));
    return 0;
}

/* Start writing the other half if it is free; the active one is sealed. */
static int Spool_switch(Spool *self) {
    int other = !self->active;
    if (self->epochs[other] != 0) return 0;
    uint64_t epoch = self->epochs[self->active] + 1;
    __atomic_store_n(&self->epochs[other], epoch, __ATOMIC_RELEASE);
    self->active = other;
    self->pos = 0;
    return 1;
}

/* The id of field key `key`: from the cache of the last keys seen at position `i` (a call site
 * passes the same key objects every time), else from `keys`, else a new one from define(). */
static int Spool_key_id(Spool *self, int i, PyObject *key) {
    if (i < KEY_CACHE && self->cached_keys[i] == key) return self->cached_ids[i];
    PyObject *id = PyDict_GetItemWithError(self->keys, key);
    if (id == NULL) {
        if (PyErr_Occurred()) return -1;
        id = PyObject_CallOneArg(self->define, key);
        if (id == NULL) return -1;
        Py_DECREF(id); /* define() stored it in keys, which keeps it alive */
    }
    long value = PyLong_AsLong(id);
    if (value < 0 || value > 0xFFFF) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "key id out of range");
        return -1;
    }
    if (i < KEY_CACHE) {
        Py_XSETREF(self->cached_keys[i], Py_NewRef(key)); /* a strong reference: the address stays its */
        self->cached_ids[i] = (uint16_t)value;
    }
    return (int)value;
}

/* Encode `item` (a dict) as a record of `track` numbered `seq`: 1 written, 0 no room, -1 error. */
static int Spool_write(Spool *self, uint32_t track, Py_ssize_t seq, PyObject *item) {
    Py_ssize_t n = PyDict_GET_SIZE(item), pos = 0, size = RECORD_HEAD;
    if (n > MAX_FIELDS || self->view.buf == NULL) return -1;
    uint16_t ids[MAX_FIELDS];
    unsigned char types[MAX_FIELDS];
    union { double d; long long i; } nums[MAX_FIELDS];
    PyObject *owned[MAX_FIELDS]; /* the packed bytes of fields that needed it */
    const char *strs[MAX_FIELDS];
    Py_ssize_t lens[MAX_FIELDS];
    PyObject *key, *value;
    int i = 0, result = -1;
    /* Pass 1 may call Python (new keys, packing), which can let another thread in: nothing is
     * written to the mapping until pass 2, which runs without calling Python. */
    while (PyDict_Next(item, &pos, &key, &value)) {
        owned[i] = NULL;
        int id = Spool_key_id(self, i, key);
        if (id < 0) goto done;
        ids[i] = (uint16_t)id;
        PyTypeObject *type = Py_TYPE(value);
        if (type == &PyFloat_Type) {
            types[i] = V_FLOAT;
            nums[i].d = PyFloat_AS_DOUBLE(value);
            size += 11;
        } else if (type == &PyLong_Type && ((nums[i].i = PyLong_AsLongLong(value)) != -1 || !PyErr_Occurred())) {
            types[i] = V_INT;
            size += 11;
        } else if (value == Py_None || type == &PyBool_Type) {
            types[i] = value == Py_None ? V_NONE : value == Py_True ? V_TRUE : V_FALSE;
            size += 3;
        } else if (type == &PyUnicode_Type && (strs[i] = PyUnicode_AsUTF8AndSize(value, &lens[i])) != NULL) {
            types[i] = V_STR;
            size += 7 + lens[i];
        } else {
            PyErr_Clear(); /* an int past 64 bits or a str with lone surrogates: packed instead */
            owned[i] = PyObject_CallOneArg(self->pack, value);
            if (owned[i] == NULL) goto done;
            if (!PyBytes_Check(owned[i])) {
                PyErr_SetString(PyExc_TypeError, "pack() must return bytes");
                i++;
                goto done;
            }
            types[i] = V_PACKED;
            strs[i] = PyBytes_AS_STRING(owned[i]);
            lens[i] = PyBytes_GET_SIZE(owned[i]);
            size += 7 + lens[i];
        }
        i++;
    }
    size = (size + 7) & ~(Py_ssize_t)7;
    if (size > self->half_bytes) goto done; /* can never fit: not spooled */
    if (self->pos + size > self->half_bytes && !Spool_switch(self)) {
        result = 0;
        goto done;
    }
    /* Pass 2: the body, then the head word that makes the record visible. */
    char *record = self->halves[self->active] + self->pos, *out = record + RECORD_HEAD;
    uint32_t u32 = track;
    uint16_t fields = (uint16_t)n, zero = 0;
    uint64_t u64 = (uint64_t)seq;
    memcpy(record + 8, &u32, 4);
    memcpy(record + 12, &fields, 2);
    memcpy(record + 14, &zero, 2);
    memcpy(record + 16, &u64, 8);
    for (int f = 0; f < i; f++) {
        memcpy(out, &ids[f], 2);
        out[2] = (char)types[f];
        out += 3;
        if (types[f] == V_FLOAT || types[f] == V_INT) {
            memcpy(out, &nums[f], 8);
            out += 8;
        } else if (types[f] == V_STR || types[f] == V_PACKED) {
            uint32_t len = (uint32_t)lens[f];
            memcpy(out, &len, 4);
            memcpy(out + 4, strs[f], lens[f]);
            out += 4 + lens[f];
        }
    }
    uint64_t head = (uint64_t)(uint32_t)size | ((uint64_t)(uint32_t)self->epochs[self->active] << 32);
    __atomic_store_n((uint64_t *)record, head, __ATOMIC_RELEASE);
    self->pos += size;
    result = 1;
done:
    for (int f = 0; f < i; f++) Py_XDECREF(owned[f]);
    return result;
}

static PyObject *Spool_rotate(Spool *self, PyObject *Py_UNUSED(ignored)) {
    /* The agent seals the active half at each flush, so halves are freed as soon as written. */
    if (self->view.buf == NULL || self->pos == 0) Py_RETURN_FALSE;
    return PyBool_FromLong(Spool_switch(self));
}

static PyObject *Spool_free(Spool *self, PyObject *arg) {
    long half = PyLong_AsLong(arg);
    if (half == -1 && PyErr_Occurred()) return NULL;
    if (half != 0 && half != 1) {
        PyErr_SetString(PyExc_ValueError, "half must be 0 or 1");
        return NULL;
    }
    if (self->view.buf != NULL && half != self->active) __atomic_store_n(&self->epochs[half], 0, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *Spool_release(Spool *self, PyObject *Py_UNUSED(ignored)) {
    if (self->view.buf != NULL) PyBuffer_Release(&self->view);
    self->view.buf = NULL;
    Py_RETURN_NONE;
}

static PyObject *Spool_get_active(Spool *self, void *Py_UNUSED(closure)) { return PyLong_FromLong(self->active); }

static PyObject *Spool_get_sealed(Spool *self, void *Py_UNUSED(closure)) {
    /* The half waiting to be freed, or None. */
    if (self->view.buf == NULL || self->epochs[!self->active] == 0) Py_RETURN_NONE;
    return PyLong_FromLong(!self->active);
}

static int Spool_traverse(Spool *self, visitproc visit, void *arg) {
    Py_VISIT(self->keys);
    Py_VISIT(self->define);
    Py_VISIT(self->pack);
    return 0;
}

static int Spool_clear(Spool *self) {
    for (int i = 0; i < KEY_CACHE; i++) Py_CLEAR(self->cached_keys[i]);
    Py_CLEAR(self->keys);
    Py_CLEAR(self->define);
    Py_CLEAR(self->pack);
    return 0;
}

static void Spool_dealloc(Spool *self) {
    PyObject_GC_UnTrack(self);
    if (self->view.buf != NULL) PyBuffer_Release(&self->view);
    Spool_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Spool_members[] = {
    {"pos", T_PYSSIZET, offsetof(Spool, pos), READONLY, "bytes used in the active half"},
    {"skipped", T_PYSSIZET, offsetof(Spool, skipped), READONLY, "items queued without a record"},
    {NULL},
};

static PyGetSetDef Spool_getset[] = {
    {"active", (getter)Spool_get_active, NULL, "the half being written", NULL},
    {"sealed", (getter)Spool_get_sealed, NULL, "the half waiting to be freed, or None", NULL},
    {NULL},
};

static PyMethodDef Spool_methods[] = {
    {"rotate", (PyCFunction)Spool_rotate, METH_NOARGS, "Seal the active half if the other is free."},
    {"free", (PyCFunction)Spool_free, METH_O, "Mark a sealed half free: all of it was written."},
    {"release", (PyCFunction)Spool_release, METH_NOARGS, "Let go of the mapping (before closing it)."},
    {NULL},
};

static PyTypeObject SpoolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dreamlake._speedups.Spool",
    .tp_doc = "The records of accepted items in a shared file mapping.",
    .tp_basicsize = sizeof(Spool),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Spool_init,
    .tp_dealloc = (destructor)Spool_dealloc,
    .tp_traverse = (traverseproc)Spool_traverse,
    .tp_clear = (inquiry)Spool_clear,
    .tp_members = Spool_members,
    .tp_getset = Spool_getset,
    .tp_methods = Spool_methods,
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
    Py_ssize_t *sizes;               /* sizes[i]: the point_bytes of items[i] */
    Py_ssize_t capacity, head, size; /* items[head], items[head + 1], ... (mod capacity) */
    Py_ssize_t appended;             /* items ever appended: the next item's seq */
    Py_ssize_t taken_bytes;          /* the point_bytes of what the last take() returned */
    Spool *spool;                    /* where append() records each item first, or NULL */
    uint32_t track;                  /* the id its records carry */
    uint64_t last_epoch[2];          /* per half: its epoch when this Fifo last wrote there */
    Py_ssize_t last_seq[2];          /* ... and the seq of that record */
} Fifo;

static int Fifo_grow(Fifo *self) {
    Py_ssize_t capacity = self->capacity ? self->capacity * 2 : 64;
    PyObject **items = PyMem_New(PyObject *, capacity);
    Py_ssize_t *sizes = PyMem_New(Py_ssize_t, capacity);
    if (items == NULL || sizes == NULL) {
        PyMem_Free(items);
        PyMem_Free(sizes);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->size; i++) {
        items[i] = self->items[(self->head + i) % self->capacity];
        sizes[i] = self->sizes[(self->head + i) % self->capacity];
    }
    PyMem_Free(self->items);
    PyMem_Free(self->sizes);
    self->items = items;
    self->sizes = sizes;
    self->capacity = capacity;
    self->head = 0;
    return 0;
}

/* Queue `item` of `bytes` (its point_bytes), recording it in the spool first if `record`: 1 if queued,
 * 0 if not (the spool is full), -1 on error. */
static int fifo_add(PyObject *fifo, PyObject *item, Py_ssize_t bytes, int record) {
    Fifo *self = (Fifo *)fifo;
    if (self->size == self->capacity && Fifo_grow(self) < 0) return -1;
    Spool *spool = self->spool;
    if (spool != NULL && !record) {
        spool->skipped++;
    } else if (spool != NULL && PyDict_CheckExact(item)) {
        int written = Spool_write(spool, self->track, self->appended, item);
        if (written == 0) return 0;
        if (written < 0) {
            /* Too many fields or keys, or bigger than a half: queued as before, without a record.
               A KeyboardInterrupt (or SystemExit) raised in define() or pack() is not such a case:
               it goes on up, as from the Python twin, which catches only Exception. */
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception)) return -1;
            PyErr_Clear();
            spool->skipped++;
        } else {
            self->last_epoch[spool->active] = spool->epochs[spool->active];
            self->last_seq[spool->active] = self->appended;
        }
    }
    Py_ssize_t at = (self->head + self->size) % self->capacity;
    self->items[at] = Py_NewRef(item);
    self->sizes[at] = bytes;
    self->size++;
    self->appended++;
    return 1;
}

/* append(item): queue it, recording it in the spool first; False (nothing queued) if the spool is full. */
static PyObject *Fifo_append(PyObject *self, PyObject *item) {
    int queued = fifo_add(self, item, point_bytes(item), 1);
    if (queued < 0) return NULL;
    if (queued == 0) Py_RETURN_FALSE;
    Py_RETURN_NONE;
}

/* push(item): queue it without a record (the spool is full and the caller cannot wait). */
static PyObject *Fifo_push(Fifo *self, PyObject *item) {
    if (fifo_add((PyObject *)self, item, point_bytes(item), 0) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Fifo_attach(Fifo *self, PyObject *args) {
    PyObject *spool;
    unsigned int track = 0;
    if (!PyArg_ParseTuple(args, "O|I", &spool, &track)) return NULL;
    if (spool != Py_None && !PyObject_TypeCheck(spool, &SpoolType)) {
        PyErr_SetString(PyExc_TypeError, "attach() takes a Spool or None");
        return NULL;
    }
    Py_XSETREF(self->spool, spool == Py_None ? NULL : (Spool *)Py_NewRef(spool));
    self->track = track;
    self->last_epoch[0] = self->last_epoch[1] = 0;
    Py_RETURN_NONE;
}

/* last_in(half): the seq of this Fifo's last record in that half (in its current epoch), or -1. */
static PyObject *Fifo_last_in(Fifo *self, PyObject *arg) {
    long half = PyLong_AsLong(arg);
    if (half == -1 && PyErr_Occurred()) return NULL;
    if (self->spool == NULL || (half != 0 && half != 1) || self->last_epoch[half] == 0 ||
        self->last_epoch[half] != self->spool->epochs[half])
        return PyLong_FromLong(-1);
    return PyLong_FromSsize_t(self->last_seq[half]);
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
    Py_ssize_t bytes = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyList_SET_ITEM(out, i, self->items[self->head]); /* the reference moves to the list */
        bytes += self->sizes[self->head];
        self->head = (self->head + 1) % self->capacity;
    }
    self->size -= n;
    self->taken_bytes = bytes;
    /* Not tracked, as the Fifo itself is not: while a flush writes, every collection (which the
     * appending loop sets off every few hundred points) would visit each point the list holds, a
     * cache miss each. It cannot be part of a cycle: it holds points (see above), nothing holds it
     * but the agent. */
    PyObject_GC_UnTrack(out);
    return out;
}

static void Fifo_release(Fifo *self) {
    PyObject **items = self->items;
    Py_ssize_t capacity = self->capacity, head = self->head, size = self->size;
    PyMem_Free(self->sizes);
    self->sizes = NULL;
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
    Py_CLEAR(self->spool);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Fifo_methods[] = {
    {"append", Fifo_append, METH_O, "Add an item at the end."},
    {"popleft", (PyCFunction)Fifo_popleft, METH_NOARGS, "Remove and return the oldest item."},
    {"take", (PyCFunction)Fifo_take, METH_O, "Remove and return the n oldest items as a list."},
    {"clear", (PyCFunction)Fifo_clear, METH_NOARGS, "Remove every item."},
    {"push", (PyCFunction)Fifo_push, METH_O, "Add an item at the end without recording it in the spool."},
    {"attach", (PyCFunction)Fifo_attach, METH_VARARGS, "Record later items in a Spool (or None) as track id."},
    {"last_in", (PyCFunction)Fifo_last_in, METH_O, "Seq of the last record in a half of the spool, or -1."},
    {NULL},
};

static PyMemberDef Fifo_members[] = {
    {"appended", T_PYSSIZET, offsetof(Fifo, appended), READONLY, "items ever appended"},
    {"taken_bytes", T_PYSSIZET, offsetof(Fifo, taken_bytes), READONLY, "point_bytes of the last take()"},
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
    .tp_members = Fifo_members,
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
    /* A server's archiver frames whole chunks (~0.5 MB, ~1 ms) in worker threads: let the event
     * loop run meanwhile. Only for bytes, which no thread can change between the two passes (a
     * bytearray could gain newlines and overrun out); small blobs keep the GIL, as a release and
     * re-take would cost more than the copy. */
    PyThreadState *released =
        blob.len >= (1 << 16) && blob.obj != NULL && PyBytes_Check(blob.obj) ? PyEval_SaveThread() : NULL;
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
    if (released != NULL) PyEval_RestoreThread(released);
    PyBuffer_Release(&blob);
    if (_PyBytes_Resize(&out, dst - PyBytes_AS_STRING(out)) < 0) return NULL;
    return out;
}

/* The points of a flush of many tracks lie in memory in the order they were appended: point 0 of
 * each track, then point 1 of each, ... Reading them track by track costs a cache miss per point; the
 * three functions below read them in that order instead ("round robin": item s of each list that has
 * one, for s = 0, 1, ...). Lists that run out leave the round, so a long list among short ones costs
 * its own length only. */

/* The lists of `arg` (borrowed), their sizes and their total, and the order of a round. */
typedef struct {
    PyObject **lists;
    Py_ssize_t n, total, *sizes, *order;
} Rounds;

/* Fill `r` from a list of lists: 0, or -1 with an error set. Free with rounds_free. */
static int rounds_of(PyObject *arg, Rounds *r) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "expected a list of lists");
        return -1;
    }
    r->n = PyList_GET_SIZE(arg);
    r->total = 0;
    r->lists = PyMem_Malloc((r->n ? r->n : 1) * sizeof(PyObject *));
    r->sizes = PyMem_Malloc((r->n ? r->n : 1) * 2 * sizeof(Py_ssize_t));
    if (r->lists == NULL || r->sizes == NULL) {
        PyMem_Free(r->lists);
        PyMem_Free(r->sizes);
        PyErr_NoMemory();
        return -1;
    }
    r->order = r->sizes + (r->n ? r->n : 1);
    for (Py_ssize_t i = 0; i < r->n; i++) {
        r->lists[i] = PyList_GET_ITEM(arg, i);
        if (!PyList_Check(r->lists[i])) {
            PyMem_Free(r->lists);
            PyMem_Free(r->sizes);
            PyErr_SetString(PyExc_TypeError, "expected a list of lists");
            return -1;
        }
        r->sizes[i] = PyList_GET_SIZE(r->lists[i]);
        r->order[i] = i;
        r->total += r->sizes[i];
    }
    return 0;
}

static void rounds_free(Rounds *r) {
    PyMem_Free(r->sizes);
    PyMem_Free(r->lists);
}

/* Keep in `order` (indexes into sizes) those with sizes[i] > s; return how many are left. */
static Py_ssize_t round_keep(Py_ssize_t *order, Py_ssize_t active, const Py_ssize_t *sizes, Py_ssize_t s) {
    Py_ssize_t kept = 0;
    for (Py_ssize_t j = 0; j < active; j++)
        if (sizes[order[j]] > s) order[kept++] = order[j];
    return kept;
}

/* interleave(lists): one list of their items in round-robin order (new references). */
static PyObject *interleave(PyObject *module, PyObject *arg) {
    Rounds r;
    if (rounds_of(arg, &r) < 0) return NULL;
    PyObject *out = PyList_New(r.total);
    Py_ssize_t k = 0, active = r.n;
    for (Py_ssize_t s = 0; out != NULL && (active = round_keep(r.order, active, r.sizes, s)) > 0; s++)
        for (Py_ssize_t j = 0; j < active; j++)
            PyList_SET_ITEM(out, k++, Py_NewRef(PyList_GET_ITEM(r.lists[r.order[j]], s)));
    rounds_free(&r);
    return out;
}

/* release_interleaved(lists): replace every item of the lists by None in round-robin order, so that
 * points freed here are freed in the order they lie in memory. */
static PyObject *release_interleaved(PyObject *module, PyObject *arg) {
    Rounds r;
    if (rounds_of(arg, &r) < 0) return NULL;
    /* a finalizer run by a DECREF below could drop the caller's lists, or shrink one */
    for (Py_ssize_t i = 0; i < r.n; i++) Py_INCREF(r.lists[i]);
    Py_ssize_t active = r.n;
    for (Py_ssize_t s = 0; (active = round_keep(r.order, active, r.sizes, s)) > 0; s++) {
        for (Py_ssize_t j = 0; j < active; j++) {
            PyObject *list = r.lists[r.order[j]];
            if (s >= PyList_GET_SIZE(list)) continue;
            PyObject *item = PyList_GET_ITEM(list, s);
            PyList_SET_ITEM(list, s, Py_NewRef(Py_None));
            Py_DECREF(item);
        }
    }
    for (Py_ssize_t i = 0; i < r.n; i++) Py_DECREF(r.lists[i]);
    rounds_free(&r);
    Py_RETURN_NONE;
}

/* frame_interleaved(blob, counts, firsts): the JSONL lines of blob, encoded from interleave() of
 * lists of sizes `counts`, back per list, each framed as frame_lines(firsts[i], ...) would. */
static PyObject *frame_interleaved(PyObject *module, PyObject *args) {
    Py_buffer blob;
    PyObject *counts_arg, *firsts_arg;
    if (!PyArg_ParseTuple(args, "y*O!O!", &blob, &PyList_Type, &counts_arg, &PyList_Type, &firsts_arg)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(counts_arg), m = n ? n : 1, total = 0;
    PyObject *out = NULL;
    Py_ssize_t *sizes = PyMem_Calloc(m * 4, sizeof(Py_ssize_t));
    char **dst = PyMem_Calloc(m, sizeof(char *));
    if (sizes == NULL || dst == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t *order = sizes + m, *index = sizes + 2 * m, *bytes = sizes + 3 * m;
    if (PyList_GET_SIZE(firsts_arg) != n) {
        PyErr_SetString(PyExc_ValueError, "counts and firsts differ in length");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        sizes[i] = PyLong_AsSsize_t(PyList_GET_ITEM(counts_arg, i));
        index[i] = PyLong_AsSsize_t(PyList_GET_ITEM(firsts_arg, i));
        if ((sizes[i] == -1 || index[i] == -1) && PyErr_Occurred()) goto done;
        order[i] = i;
        total += sizes[i];
    }
    static const char head[] = "{\"index\":", mid[] = ",\"data\":";
    const Py_ssize_t fixed = (Py_ssize_t)(sizeof(head) - 1 + sizeof(mid) - 1 + 1) + 20;
    const char *src = blob.buf, *end = src + blob.len, *line = src, *nl = NULL;
    /* first pass: each list's share of the bytes (and a check that the blob has their lines) */
    Py_ssize_t active = n, lines = 0;
    for (Py_ssize_t s = 0; (active = round_keep(order, active, sizes, s)) > 0; s++) {
        for (Py_ssize_t j = 0; j < active; j++, lines++, line = nl + 1) {
            if ((nl = memchr(line, '\n', end - line)) == NULL) break;
            bytes[order[j]] += (nl - line) + fixed;
        }
        if (nl == NULL) break;
    }
    if (lines != total || line != end) {
        PyErr_SetString(PyExc_ValueError, "the blob does not hold one line per item");
        goto done;
    }
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, bytes[i]);
        if (b == NULL) Py_CLEAR(out);
        else {
            PyList_SET_ITEM(out, i, b);
            dst[i] = PyBytes_AS_STRING(b);
        }
    }
    if (out == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) order[i] = i;
    active = n;
    line = src;
    for (Py_ssize_t s = 0; (active = round_keep(order, active, sizes, s)) > 0; s++) {
        for (Py_ssize_t j = 0; j < active; j++, line = nl + 1) {
            Py_ssize_t i = order[j];
            char *d = dst[i];
            nl = memchr(line, '\n', end - line);
            memcpy(d, head, sizeof(head) - 1);
            d += sizeof(head) - 1;
            d += write_index(d, index[i]++);
            memcpy(d, mid, sizeof(mid) - 1);
            d += sizeof(mid) - 1;
            memcpy(d, line, nl - line);
            d += nl - line;
            *d++ = '}';
            *d++ = '\n';
            dst[i] = d;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyList_GET_ITEM(out, i);
        if (_PyBytes_Resize(&b, dst[i] - PyBytes_AS_STRING(b)) < 0) {
            PyList_SET_ITEM(out, i, Py_NewRef(Py_None));
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, b);
    }
done:
    PyMem_Free(sizes);
    PyMem_Free(dst);
    PyBuffer_Release(&blob);
    return out;
}

/* write_runs: the data writes of one flush of a wide session, one system call after another with the
 * GIL released (the Python twin is _disk/runs.py, which says what a run is). Per run: open (unless a
 * descriptor is given; after making its directory, if asked), flock, fstat: the size must be the one expected (else another process wrote
 * the track: stop); write the lines (a failure truncates them away: stop); replace metadata.json if
 * asked and it is still the one last seen; unlock, close. Stops at the first run it cannot write
 * cleanly, which the caller then writes the slow way; returns what it wrote. */

typedef struct {
    int fd;
    PyObject *path, *blob, *meta_path, *tmp_path, *meta_blob, *make; /* bytes (owned) or NULL */
    Py_ssize_t size;
    int meta;            /* 0: none; 1: replace if absent; 2: replace if its stamp is (ino, mtime, msize) */
    unsigned long long ino;
    long long mtime;
    Py_ssize_t msize;
    int stamped;         /* out: metadata.json replaced, its stamp in ino/mtime/msize */
} Run;

static int write_all(int fd, const char *buf, Py_ssize_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, (size_t)len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= n;
    }
    return 0;
}

static long long mtime_ns(const struct stat *st) {
#ifdef __APPLE__
    return (long long)st->st_mtimespec.tv_sec * 1000000000LL + st->st_mtimespec.tv_nsec;
#else
    return (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
#endif
}

static void replace_meta(Run *r) {
    struct stat st;
    int present = stat(PyBytes_AS_STRING(r->meta_path), &st) == 0;
    if (!present && errno != ENOENT) return;
    if (present != (r->meta == 2)) return;
    if (present && ((unsigned long long)st.st_ino != r->ino || mtime_ns(&st) != r->mtime || st.st_size != r->msize))
        return; /* replaced by someone else since: the caller re-reads it */
    const char *tmp = PyBytes_AS_STRING(r->tmp_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return;
    int ok = write_all(fd, PyBytes_AS_STRING(r->meta_blob), PyBytes_GET_SIZE(r->meta_blob)) == 0 &&
             fstat(fd, &st) == 0;
    if (close(fd) != 0) ok = 0;
    if (ok && rename(tmp, PyBytes_AS_STRING(r->meta_path)) == 0) {
        r->stamped = 1;
        r->ino = (unsigned long long)st.st_ino;
        r->mtime = mtime_ns(&st);
        r->msize = st.st_size;
    } else {
        unlink(tmp);
    }
}

static int flock_retry(int fd, int op) {
    int rc;
    while ((rc = flock(fd, op)) != 0 && errno == EINTR) {
    }
    return rc;
}

/* 1: written; 0: not (nothing of it is in the file). */
static int write_run(Run *r) {
    if (r->make != NULL && mkdir(PyBytes_AS_STRING(r->make), 0777) != 0) return 0; /* it was there */
    int fd = r->fd;
    if (fd < 0) fd = open(PyBytes_AS_STRING(r->path), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return 0;
    int written = 0;
    struct stat st;
    if (flock_retry(fd, LOCK_EX) == 0) {
        if (fstat(fd, &st) == 0 && st.st_size == r->size) {
            if (write_all(fd, PyBytes_AS_STRING(r->blob), PyBytes_GET_SIZE(r->blob)) == 0) {
                written = 1;
                if (r->meta) replace_meta(r);
            } else if (ftruncate(fd, r->size) != 0) {
                /* the slow path's lock sees the torn tail and cuts it */
            }
        }
        flock_retry(fd, LOCK_UN);
    }
    if (r->fd < 0) close(fd);
    return written;
}

static void runs_free(Run *runs, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(runs[i].path);
        Py_XDECREF(runs[i].blob);
        Py_XDECREF(runs[i].meta_path);
        Py_XDECREF(runs[i].tmp_path);
        Py_XDECREF(runs[i].meta_blob);
        Py_XDECREF(runs[i].make);
    }
    PyMem_Free(runs);
}

static int run_parse(PyObject *item, Run *r) {
    PyObject *path, *meta, *make;
    if (!PyArg_ParseTuple(item, "iO&nSOO", &r->fd, PyUnicode_FSConverter, &path, &r->size, &r->blob, &meta,
                          &make))
        return -1;
    r->path = path;
    Py_INCREF(r->blob);
    if (make != Py_None && !PyUnicode_FSConverter(make, &r->make)) return -1;
    if (meta == Py_None) return 0;
    PyObject *stamp, *mpath, *tpath;
    if (!PyArg_ParseTuple(meta, "O&O&SO", PyUnicode_FSConverter, &mpath, PyUnicode_FSConverter, &tpath,
                          &r->meta_blob, &stamp))
        return -1;
    r->meta_path = mpath;
    r->tmp_path = tpath;
    Py_INCREF(r->meta_blob);
    r->meta = 1;
    if (stamp == Py_None) return 0;
    r->meta = 2;
    return PyArg_ParseTuple(stamp, "KLn", &r->ino, &r->mtime, &r->msize) ? 0 : -1;
}

static PyObject *write_runs(PyObject *module, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "write_runs takes a list of runs");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    Run *runs = PyMem_Calloc(n ? n : 1, sizeof(Run));
    if (runs == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (run_parse(PyList_GET_ITEM(arg, i), &runs[i]) < 0) {
            runs_free(runs, n);
            return NULL;
        }
    }
    Py_ssize_t done = 0;
    Py_BEGIN_ALLOW_THREADS
    while (done < n && write_run(&runs[done])) done++;
    Py_END_ALLOW_THREADS
    PyObject *out = PyList_New(done);
    for (Py_ssize_t i = 0; out != NULL && i < done; i++) {
        Run *r = &runs[i];
        PyObject *item = r->stamped ? Py_BuildValue("n(KLn)", r->size + PyBytes_GET_SIZE(r->blob), r->ino,
                                                    r->mtime, r->msize)
                                    : Py_BuildValue("nO", r->size + PyBytes_GET_SIZE(r->blob), Py_None);
        if (item == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, item);
    }
    runs_free(runs, n);
    return out;
}

static PyMethodDef module_methods[] = {
    {"frame_lines", frame_lines, METH_VARARGS, "Number JSONL lines as {\"index\": i, \"data\": line}."},
    {"interleave", interleave, METH_O, "The items of lists in round-robin order, as one list."},
    {"frame_interleaved", frame_interleaved, METH_VARARGS, "An interleave()d blob's lines, framed per list."},
    {"release_interleaved", release_interleaved, METH_O, "Replace the items of lists by None, round robin."},
    {"point_bytes", py_point_bytes, METH_O, "The estimated bytes a queued point holds."},
    {"points_bytes", py_points_bytes, METH_O, "The sum of point_bytes over a list."},
    {"write_runs", write_runs, METH_O, "Append runs of lines to their files (see _disk/runs.py)."},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "dreamlake._speedups", "The compiled hot path of dreamlake.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&GateType) < 0 || PyType_Ready(&TrackCoreType) < 0 || PyType_Ready(&LogCoreType) < 0 ||
        PyType_Ready(&ReadyType) < 0 || PyType_Ready(&FifoType) < 0 || PyType_Ready(&SpoolType) < 0)
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
    Py_INCREF(&SpoolType);
    if (PyModule_AddObject(module, "Spool", (PyObject *)&SpoolType) < 0) {
        Py_DECREF(&SpoolType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
