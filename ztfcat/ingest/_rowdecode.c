/* The executor of ztfcat.rowdecode plans: Avro binary -> row tuples, without dicts.
 *
 * A plan (compiled in Python from a writer schema, see rowdecode.py) is a table of nodes (opcode and
 * operands) and programs (a record's fields: the tuple slot each lands in, or skip).  Plan.run walks the
 * datum once.  Every read is bounds-checked against the buffer: damaged or truncated bytes raise the
 * error class the plan was built with (ztfcat.errors.AlertDecodeError), naming the field and byte.
 *
 * A *whole* plan (Plan(..., whole=True)) gives instead what fastavro.schemaless_reader gives: every
 * record a dict of its fields in schema order, NaN kept as NaN, strings as they are.  It is how the
 * catalog reads its stored packets back (get_alert, iter_alerts), with ~7x less CPU than fastavro.
 *
 * PLAN_FORMAT must equal rowdecode.PLAN_FORMAT: bump both whenever the plan's tables change, so that an
 * extension left over from an older build is not used (Python then runs the plans itself).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define PLAN_FORMAT 2
#define MAX_PATH 32

enum { K_NULL, K_BOOLEAN, K_INT, K_LONG, K_FLOAT, K_DOUBLE, K_STRING, K_BYTES, K_RECORD, K_ARRAY, K_UNION };
#define SKIP (-1)

typedef struct {
    int kind, a, b;
    Py_ssize_t minsize;
} Node;

typedef struct {
    int slot, node;
    PyObject *name;
} Field;

typedef struct {
    Py_ssize_t nslots, nside, nfields;
    Field *fields;
} Program;

typedef struct {
    PyObject_HEAD
    Node *nodes;
    Py_ssize_t nnodes;
    int *branches;
    Py_ssize_t nbranches;
    Program *programs;
    Py_ssize_t nprograms;
    PyObject *error;
    int whole; /* records as dicts, NaN and NUL kept: fastavro's output */
} PlanObject;

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len, pos;
    PlanObject *plan;
    int depth;
    PyObject *path_name[MAX_PATH];
    Py_ssize_t path_index[MAX_PATH];
} Ctx;

/* ---- errors ------------------------------------------------------------------------------------ */

static PyObject *path_string(Ctx *c) {
    PyObject *out = PyUnicode_FromString("");
    int depth = c->depth < MAX_PATH ? c->depth : MAX_PATH;
    for (int i = 0; out && i < depth; i++) {
        PyObject *part;
        if (c->path_index[i] >= 0)
            part = PyUnicode_FromFormat("%s%U[%zd]", i ? "." : "", c->path_name[i], c->path_index[i]);
        else
            part = PyUnicode_FromFormat("%s%U", i ? "." : "", c->path_name[i]);
        if (!part) {
            Py_CLEAR(out);
            break;
        }
        PyObject *joined = PyUnicode_Concat(out, part);
        Py_DECREF(part);
        Py_SETREF(out, joined);
    }
    return out;
}

static void fail(Ctx *c, const char *what, Py_ssize_t at) {
    PyObject *path = path_string(c);
    if (!path)
        return;
    if (PyUnicode_GET_LENGTH(path))
        PyErr_Format(c->plan->error, "%U %s (byte %zd of %zd of the record)", path, what, at, c->len);
    else
        PyErr_Format(c->plan->error, "the record %s (byte %zd of %zd)", what, at, c->len);
    Py_DECREF(path);
}

/* ---- primitives -------------------------------------------------------------------------------- */

static int read_long(Ctx *c, long long *out) {
    unsigned long long result = 0;
    Py_ssize_t start = c->pos;
    int shift = 0;
    for (;;) {
        if (c->pos >= c->len) {
            fail(c, "is truncated", start);
            return -1;
        }
        unsigned char byte = c->buf[c->pos++];
        if (shift == 63 && (byte & 0x7E)) {
            fail(c, "holds a number longer than 64 bits", start);
            return -1;
        }
        result |= (unsigned long long)(byte & 0x7F) << shift;
        if (!(byte & 0x80))
            break;
        shift += 7;
        if (shift > 63) {
            fail(c, "holds a number longer than 64 bits", start);
            return -1;
        }
    }
    *out = (long long)(result >> 1) ^ -(long long)(result & 1);
    return 0;
}

static int need(Ctx *c, Py_ssize_t n) {
    if (n > c->len - c->pos) {
        fail(c, "is truncated", c->pos);
        return -1;
    }
    return 0;
}

static PyObject *decode(Ctx *c, int ni, int want);

/* A record as a dict of its first nfields fields (all where nfields < 0), for whole plans. */
static PyObject *decode_dict(Ctx *c, int pi, Py_ssize_t nfields) {
    const Program *p = &c->plan->programs[pi];
    if (nfields < 0 || nfields > p->nfields)
        nfields = p->nfields;
    PyObject *dict = PyDict_New(); /* not presized: that table's entries would also hold hashes, 40 % more */
    if (!dict)
        return NULL;
    for (Py_ssize_t i = 0; i < nfields; i++) {
        const Field *f = &p->fields[i];
        if (c->depth < MAX_PATH) {
            c->path_name[c->depth] = f->name;
            c->path_index[c->depth] = -1;
        }
        c->depth++;
        PyObject *value = decode(c, f->node, 1);
        if (!value) {
            Py_DECREF(dict);
            return NULL;
        }
        c->depth--;
        int failed = PyDict_SetItem(dict, f->name, value);
        Py_DECREF(value);
        if (failed) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *decode_record(Ctx *c, int pi, int want, Py_ssize_t nfields) {
    const Program *p = &c->plan->programs[pi];
    PyObject *main = NULL, *side = NULL;
    if (nfields < 0 || nfields > p->nfields)
        nfields = p->nfields;
    if (want) {
        main = PyTuple_New(p->nslots);
        if (!main)
            return NULL;
        if (p->nside) {
            side = PyTuple_New(p->nside);
            if (!side)
                goto error;
        }
    }
    for (Py_ssize_t i = 0; i < nfields; i++) {
        const Field *f = &p->fields[i];
        int keep = want && f->slot != SKIP;
        if (c->depth < MAX_PATH) {
            c->path_name[c->depth] = f->name;
            c->path_index[c->depth] = -1;
        }
        c->depth++;
        PyObject *value = decode(c, f->node, keep);
        if (!value)
            goto error;
        c->depth--;
        if (keep) {
            PyObject *target = f->slot >= 0 ? main : side;
            Py_ssize_t at = f->slot >= 0 ? f->slot : -2 - f->slot;
            Py_XSETREF(((PyTupleObject *)target)->ob_item[at], value);
        } else {
            Py_DECREF(value);
        }
    }
    if (!want)
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < p->nslots; i++)
        if (!PyTuple_GET_ITEM(main, i))
            PyTuple_SET_ITEM(main, i, Py_NewRef(Py_None));
    if (side) {
        for (Py_ssize_t i = 0; i < p->nside; i++)
            if (!PyTuple_GET_ITEM(side, i))
                PyTuple_SET_ITEM(side, i, Py_NewRef(Py_None));
        PyObject *pair = PyTuple_New(2);
        if (!pair)
            goto error;
        PyTuple_SET_ITEM(pair, 0, main);
        PyTuple_SET_ITEM(pair, 1, side);
        return pair;
    }
    return main;
error:
    Py_XDECREF(main);
    Py_XDECREF(side);
    return NULL;
}

static PyObject *decode_array(Ctx *c, int item, int want) {
    PyObject *list = NULL;
    Py_ssize_t minsize = c->plan->nodes[item].minsize;
    Py_ssize_t index = 0;
    int top = c->depth - 1;
    if (want && !(list = PyList_New(0)))
        return NULL;
    for (;;) {
        long long count, size;
        Py_ssize_t start = c->pos;
        if (top >= 0 && top < MAX_PATH)
            c->path_index[top] = index; /* a damaged block count names the item it stands before */
        if (read_long(c, &count) < 0)
            goto error;
        if (count == 0)
            break;
        if (count < 0) {
            if (count == LLONG_MIN) {
                fail(c, "holds a malformed array block", start);
                goto error;
            }
            count = -count;
            if (read_long(c, &size) < 0)
                goto error;
        }
        /* A count the remaining bytes cannot hold is damage; never allocate for it. */
        if ((minsize > 0 && count > (c->len - c->pos) / minsize) || (minsize == 0 && count > (1 << 24))) {
            fail(c, "holds an array longer than the record", start);
            goto error;
        }
        for (long long i = 0; i < count; i++, index++) {
            if (top >= 0 && top < MAX_PATH)
                c->path_index[top] = index;
            PyObject *value = decode(c, item, want);
            if (!value)
                goto error;
            if (want) {
                int failed = PyList_Append(list, value);
                Py_DECREF(value);
                if (failed)
                    goto error;
            } else {
                Py_DECREF(value);
            }
        }
    }
    if (top >= 0 && top < MAX_PATH)
        c->path_index[top] = -1;
    if (!want)
        Py_RETURN_NONE;
    return list;
error:
    Py_XDECREF(list);
    return NULL;
}

static PyObject *decode(Ctx *c, int ni, int want) {
    const Node *n = &c->plan->nodes[ni];
    switch (n->kind) {
    case K_NULL:
        Py_RETURN_NONE;
    case K_BOOLEAN: {
        if (need(c, 1) < 0)
            return NULL;
        unsigned char byte = c->buf[c->pos++];
        if (!want)
            Py_RETURN_NONE;
        return PyBool_FromLong(byte != 0);
    }
    case K_INT:
    case K_LONG: {
        long long value;
        if (read_long(c, &value) < 0)
            return NULL;
        if (!want)
            Py_RETURN_NONE;
        return PyLong_FromLongLong(value);
    }
    case K_FLOAT: {
        if (need(c, 4) < 0)
            return NULL;
        const unsigned char *p = c->buf + c->pos;
        c->pos += 4;
        if (!want)
            Py_RETURN_NONE;
#if PY_LITTLE_ENDIAN
        float value;
        memcpy(&value, p, 4);
#else
        double value = PyFloat_Unpack4((const char *)p, 1);
#endif
        if (isnan(value) && !c->plan->whole)
            Py_RETURN_NONE;
        return PyFloat_FromDouble((double)value);
    }
    case K_DOUBLE: {
        if (need(c, 8) < 0)
            return NULL;
        const unsigned char *p = c->buf + c->pos;
        c->pos += 8;
        if (!want)
            Py_RETURN_NONE;
#if PY_LITTLE_ENDIAN
        double value;
        memcpy(&value, p, 8);
#else
        double value = PyFloat_Unpack8((const char *)p, 1);
#endif
        if (isnan(value) && !c->plan->whole)
            Py_RETURN_NONE;
        return PyFloat_FromDouble(value);
    }
    case K_STRING:
    case K_BYTES: {
        long long length;
        Py_ssize_t start = c->pos;
        if (read_long(c, &length) < 0)
            return NULL;
        if (length < 0) {
            fail(c, "has a negative length", start);
            return NULL;
        }
        if (length > c->len - c->pos) {
            fail(c, "is truncated", start);
            return NULL;
        }
        const char *p = (const char *)c->buf + c->pos;
        c->pos += (Py_ssize_t)length;
        if (n->kind == K_BYTES) {
            if (!want)
                Py_RETURN_NONE;
            return PyBytes_FromStringAndSize(p, (Py_ssize_t)length);
        }
        PyObject *text = PyUnicode_DecodeUTF8(p, (Py_ssize_t)length, NULL);
        if (!text) {
            PyErr_Clear();
            fail(c, "is not UTF-8", start);
            return NULL;
        }
        if (want && !c->plan->whole && memchr(p, 0, (size_t)length)) {
            Py_DECREF(text);
            fail(c, "holds a NUL byte", start);
            return NULL;
        }
        if (!want) {
            Py_DECREF(text);
            Py_RETURN_NONE;
        }
        return text;
    }
    case K_UNION: {
        long long branch;
        Py_ssize_t start = c->pos;
        if (read_long(c, &branch) < 0)
            return NULL;
        if (branch < 0 || branch >= n->b) {
            fail(c, "holds a union branch out of range", start);
            return NULL;
        }
        return decode(c, c->plan->branches[n->a + branch], want);
    }
    case K_RECORD:
        return c->plan->whole ? decode_dict(c, n->a, -1) : decode_record(c, n->a, want, -1);
    case K_ARRAY:
        return decode_array(c, n->a, want);
    }
    PyErr_SetString(PyExc_SystemError, "ztfcat._rowdecode: bad opcode");
    return NULL;
}

/* ---- the Plan type ----------------------------------------------------------------------------- */

static void plan_dealloc(PlanObject *self) {
    if (self->programs) {
        for (Py_ssize_t i = 0; i < self->nprograms; i++) {
            Program *p = &self->programs[i];
            if (p->fields) {
                for (Py_ssize_t j = 0; j < p->nfields; j++)
                    Py_XDECREF(p->fields[j].name);
                PyMem_Free(p->fields);
            }
        }
        PyMem_Free(self->programs);
    }
    PyMem_Free(self->nodes);
    PyMem_Free(self->branches);
    Py_XDECREF(self->error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int as_int(PyObject *seq, Py_ssize_t i, long lo, long hi, long *out) {
    PyObject *item = PySequence_GetItem(seq, i);
    if (!item)
        return -1;
    long value = PyLong_AsLong(item);
    Py_DECREF(item);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < lo || value > hi) {
        PyErr_Format(PyExc_ValueError, "plan operand %ld out of range [%ld, %ld]", value, lo, hi);
        return -1;
    }
    *out = value;
    return 0;
}

/* Plan(nodes, branches, programs, error, whole=False): the tables of a RowPlan, every index checked
 * once here so that running the plan needs no checks but the data's own. */
static int plan_init(PlanObject *self, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"nodes", "branches", "programs", "error", "whole", NULL};
    PyObject *nodes, *branches, *programs, *error;
    int whole = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO|p:Plan", keywords, &nodes, &branches, &programs,
                                     &error, &whole))
        return -1;
    if (self->nodes) {
        PyErr_SetString(PyExc_TypeError, "Plan is already initialised");
        return -1;
    }
    if (!PyType_Check(error) || !PyType_IsSubtype((PyTypeObject *)error, (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "error must be an exception class");
        return -1;
    }
    self->error = Py_NewRef(error);
    self->whole = whole;
    Py_ssize_t nn = PySequence_Size(nodes), nb = PySequence_Size(branches), np = PySequence_Size(programs);
    if (nn < 0 || nb < 0 || np < 0)
        return -1;
    if (np < 1) {
        PyErr_SetString(PyExc_ValueError, "a plan needs a top-level program");
        return -1;
    }
    self->nodes = PyMem_Calloc(nn ? nn : 1, sizeof(Node));
    self->branches = PyMem_Calloc(nb ? nb : 1, sizeof(int));
    self->programs = PyMem_Calloc(np, sizeof(Program));
    if (!self->nodes || !self->branches || !self->programs) {
        PyErr_NoMemory();
        return -1;
    }
    self->nnodes = nn;
    self->nbranches = nb;
    self->nprograms = np;
    for (Py_ssize_t i = 0; i < nb; i++) {
        long v;
        if (as_int(branches, i, 0, (long)nn - 1, &v) < 0)
            return -1;
        self->branches[i] = (int)v;
    }
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *prog = PySequence_GetItem(programs, i);
        if (!prog)
            return -1;
        long nslots, nside;
        PyObject *fields = NULL;
        int bad = PySequence_Size(prog) != 3 || as_int(prog, 0, 0, 1 << 20, &nslots) < 0 ||
                  as_int(prog, 1, 0, 1 << 20, &nside) < 0 || !(fields = PySequence_GetItem(prog, 2));
        Py_DECREF(prog);
        if (bad) {
            Py_XDECREF(fields);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a plan program is (slots, side, fields)");
            return -1;
        }
        Program *p = &self->programs[i];
        p->nslots = nslots;
        p->nside = nside;
        Py_ssize_t nf = PySequence_Size(fields);
        if (nf < 0 || !(p->fields = PyMem_Calloc(nf ? nf : 1, sizeof(Field)))) {
            Py_DECREF(fields);
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t j = 0; j < nf; j++) {
            PyObject *f = PySequence_GetItem(fields, j);
            long slot, node;
            PyObject *name = NULL;
            bad = !f || PySequence_Size(f) != 3 || as_int(f, 0, -2 - nside + 1, nslots - 1, &slot) < 0 ||
                  as_int(f, 1, 0, (long)nn - 1, &node) < 0 || !(name = PySequence_GetItem(f, 2)) ||
                  !PyUnicode_Check(name);
            Py_XDECREF(f);
            if (bad) {
                Py_XDECREF(name);
                Py_DECREF(fields);
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "a plan field is (slot, node, name)");
                return -1;
            }
            PyUnicode_InternInPlace(&name); /* dict keys: interned, so every lookup of them is a pointer test */
            p->fields[j].slot = (int)slot;
            p->fields[j].node = (int)node;
            p->fields[j].name = name;
            p->nfields = j + 1;
        }
        Py_DECREF(fields);
    }
    for (Py_ssize_t i = 0; i < nn; i++) {
        PyObject *node = PySequence_GetItem(nodes, i);
        if (!node)
            return -1;
        long kind, a, b, size;
        int bad = PySequence_Size(node) != 4 || as_int(node, 0, K_NULL, K_UNION, &kind) < 0 ||
                  as_int(node, 1, 0, LONG_MAX, &a) < 0 || as_int(node, 2, 0, LONG_MAX, &b) < 0 ||
                  as_int(node, 3, 0, LONG_MAX, &size) < 0;
        Py_DECREF(node);
        if (bad) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a plan node is (opcode, a, b, size)");
            return -1;
        }
        /* Operands must point at existing entries, and every node only at nodes before it (a union's
         * branches, an array's items, a record's fields), so no plan can recurse forever. */
        if ((kind == K_RECORD && (a < 1 || a >= np)) || (kind == K_ARRAY && a >= i) ||
            (kind == K_UNION && (b < 1 || a + b > nb))) {
            PyErr_Format(PyExc_ValueError, "plan node %zd has operands out of range", i);
            return -1;
        }
        if (kind == K_UNION)
            for (long j = a; j < a + b; j++)
                if (self->branches[j] >= i) {
                    PyErr_Format(PyExc_ValueError, "plan node %zd refers forward", i);
                    return -1;
                }
        if (kind == K_RECORD)
            for (Py_ssize_t j = 0; j < self->programs[a].nfields; j++)
                if (self->programs[a].fields[j].node >= i) {
                    PyErr_Format(PyExc_ValueError, "plan node %zd refers forward", i);
                    return -1;
                }
        self->nodes[i].kind = (int)kind;
        self->nodes[i].a = (int)a;
        self->nodes[i].b = (int)b;
        self->nodes[i].minsize = size;
    }
    return 0;
}

PyDoc_STRVAR(run_doc,
             "run(datum, nfields) -> (top-level tuple, or dict for a whole plan; end position)\n\n"
             "Decode one record from byte 0 of datum, reading the first nfields top-level fields "
             "(all of them where nfields < 0).");

static PyObject *plan_run(PlanObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t nfields;
    if (!self->nodes) {
        PyErr_SetString(PyExc_TypeError, "Plan is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*n:run", &view, &nfields))
        return NULL;
    Ctx c;
    c.buf = view.buf;
    c.len = view.len;
    c.pos = 0;
    c.plan = self;
    c.depth = 0;
    PyObject *top = self->whole ? decode_dict(&c, 0, nfields) : decode_record(&c, 0, 1, nfields);
    PyObject *out = top ? Py_BuildValue("(Nn)", top, c.pos) : NULL;
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef plan_methods[] = {
    {"run", (PyCFunction)plan_run, METH_VARARGS, run_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ztfcat._rowdecode.Plan",
    .tp_basicsize = sizeof(PlanObject),
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A compiled row-decoding plan (see ztfcat.rowdecode.RowPlan).",
    .tp_methods = plan_methods,
    .tp_init = (initproc)plan_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rowdecode", "Executor of ztfcat.rowdecode plans (Avro binary -> row tuples).", -1, NULL,
};

PyMODINIT_FUNC PyInit__rowdecode(void) {
    if (PyType_Ready(&PlanType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddIntConstant(m, "PLAN_FORMAT", PLAN_FORMAT) < 0 ||
        PyModule_AddObjectRef(m, "Plan", (PyObject *)&PlanType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
