"""Shipping a function to the ranks. cloudpickle pickles functions of importable modules by
reference, which only works where the same module can be imported: fine for installed
packages, wrong for the user's own script or a module next to it (a Spark executor has
neither). Those modules are pickled by value instead.

A function pickled by value must still give a useful traceback on the rank that runs it:
cloudpickle >= 3.1.3 renames every code object it ships to "<dynamic-code>", and the rank may
not have the source file at all (a script's __main__ on another host, a notebook cell, an
exec'd string). So the payload keeps each code object's real file name and carries the
source lines of those files; loads_call registers them with linecache on the rank, and its
tracebacks show the line that raised."""
import io
import linecache
import os
import pickle
import site
import sys
import sysconfig
import types

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


def _code_with_filename(code_args, filename):
    """Unpickling side of _CallPickler's code reducer: the code object as cloudpickle builds
    it, under its original file name (only the name changes; line numbers are kept)."""
    return types.CodeType(*code_args).replace(co_filename=filename)


class _CallPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, noting the file of every code object it ships by value and
    keeping that name in the payload."""

    _cloudpickle_code_reduce = staticmethod(cloudpickle.Pickler.dispatch_table[types.CodeType])

    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.filenames = set()

    def reducer_override(self, obj):
        if isinstance(obj, types.CodeType):
            constructor, code_args = self._cloudpickle_code_reduce(obj)
            if constructor is types.CodeType:
                self.filenames.add(obj.co_filename)
                return _code_with_filename, (code_args, obj.co_filename)
            return constructor, code_args
        return super().reducer_override(obj)


def _source_lines(filename):
    lines = linecache.getlines(filename)
    return lines or None


def dumps_call(fn, args, kwargs):
    """Pickle (fn, args, kwargs), with the user's own modules carried by value and the source
    lines of every file whose code travels by value."""
    modules = {m for m in (_local_module(getattr(fn, "__module__", None) or ""),) if m is not None}
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        buffer = io.BytesIO()
        pickler = _CallPickler(buffer)
        pickler.dump((fn, tuple(args), dict(kwargs or {})))
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)
    sources = {name: lines for name in sorted(pickler.filenames) if (lines := _source_lines(name))}
    return pickle.dumps((sources, buffer.getvalue()), protocol=pickle.HIGHEST_PROTOCOL)


def loads_call(data):
    """(fn, args, kwargs) from dumps_call's bytes; the shipped sources go into linecache first,
    so a traceback on this rank shows the caller's lines even where the file does not exist."""
    sources, call = pickle.loads(data)
    for filename, lines in sources.items():
        # mtime None: linecache.checkcache leaves the entry alone (as for a module's __loader__)
        linecache.cache[filename] = (sum(map(len, lines)), None, list(lines), filename)
    return pickle.loads(call)
