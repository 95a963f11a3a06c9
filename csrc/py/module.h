/* py/module.h: what the Python-facing files share: module state accessors and the two
 * entry points behind coglet.server. */
#ifndef COGLET_PY_MODULE_H
#define COGLET_PY_MODULE_H

#include <Python.h>

PyObject *coglet_cancelation_exception(PyObject *module); /* borrowed */
PyObject *coglet_sdk_module(PyObject *module);            /* coglet._sdk, borrowed */
void coglet_set_worker_active(PyObject *module, int active);
PyObject *coglet_serve(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *coglet_run_worker(PyObject *module);

#endif
