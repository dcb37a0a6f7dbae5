"""Shipping a function to the ranks. cloudpickle pickles functions of importable modules by
reference, which only works where the same module can be imported: fine for installed
packages, wrong for the user's own script or a module next to it (a Spark executor has
neither). Those modules are pickled by value instead."""
import os
import site
import sys
import sysconfig

import cloudpickle

_INSTALLED = tuple(os.path.realpath(p) for p in {*site.getsitepackages(), site.getusersitepackages(),
                                                 sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                                                 sysconfig.get_paths()["platlib"]} if p)


def _local_module(name):
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if module is None or path is None or name == "__main__" or name.startswith(("ringtrain", "pyspark")):
        return None
    return None if os.path.realpath(path).startswith(_INSTALLED) else module


def dumps_call(fn, args, kwargs):
    """cloudpickle of (fn, args, kwargs), with the user's own modules carried by value."""
    modules = {m for m in (_local_module(getattr(fn, "__module__", None) or ""),) if m is not None}
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps((fn, tuple(args), dict(kwargs or {})))
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)
