"""A rank's traceback shows the file and the source line that raised, wherever the function was
defined (a test module, a script's __main__, a notebook-like exec'd cell, a lambda), whatever
cloudpickle does with the file names of the code it ships (3.1.3 renames them all)."""
import linecache
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

import ringtrain as rt
from ringtrain.launch.pickling import dumps_call, loads_call


def _raise_key_error(rank):
    if rank == 1:
        raise KeyError("missing parameter 'lr'")


def _cell(source, name):
    """What Jupyter/IPython does with a cell: compile under a name that is no file, register the
    source in linecache, exec it. Returns the cell's namespace."""
    source = textwrap.dedent(source)
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    namespace = {"rt": rt}
    exec(compile(source, name, "exec"), namespace)
    return namespace


def test_payload_keeps_file_names_and_carries_sources_of_by_value_code():
    ns = _cell("""
        def fails():
            raise ValueError("from a cell")
    """, "<ringtrain-cell-payload>")
    data = dumps_call(ns["fails"], (), {})
    del linecache.cache["<ringtrain-cell-payload>"]  # as on a rank that never saw the cell
    fn, args, kwargs = loads_call(data)
    assert fn.__code__.co_filename == "<ringtrain-cell-payload>"
    assert (args, kwargs) == ((), {})
    with pytest.raises(ValueError) as info:
        fn()
    import traceback

    text = "".join(traceback.format_exception(info.value))
    assert 'raise ValueError("from a cell")' in text
    linecache.cache.pop("<ringtrain-cell-payload>", None)


def test_function_of_a_test_module():
    def fails():
        _raise_key_error(rt.rank())
        rt.barrier()

    with pytest.raises(rt.RemoteError) as info:
        rt.run(fails, np=2)
    assert info.value.rank == 1
    tb = info.value.remote_traceback
    assert __file__ in tb and "_raise_key_error(rt.rank())" in tb
    assert "raise KeyError(\"missing parameter 'lr'\")" in tb


def test_lambda():
    with pytest.raises(rt.RemoteError) as info:
        rt.run(lambda: _raise_key_error(rt.rank()) or rt.barrier(), np=2)
    tb = info.value.remote_traceback
    assert "rt.run(lambda: _raise_key_error(rt.rank()) or rt.barrier(), np=2)" in tb
    assert "raise KeyError(\"missing parameter 'lr'\")" in tb


def test_notebook_like_cell():
    ns = _cell("""
        def train():
            if rt.rank() == 1:
                raise ValueError("bad shard in the cell")
            rt.barrier()
    """, "<ringtrain-cell-1>")
    try:
        with pytest.raises(rt.RemoteError) as info:
            rt.run(ns["train"], np=2)
    finally:
        linecache.cache.pop("<ringtrain-cell-1>", None)
    tb = info.value.remote_traceback
    assert 'File "<ringtrain-cell-1>", line 4, in train' in tb
    assert 'raise ValueError("bad shard in the cell")' in tb


def test_script_main_with_the_decorator():
    """A script's own functions travel by value (the ranks do not import __main__)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train_script.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent("""
                import ringtrain as rt

                @rt.distributed(np=2, backend="mpi")
                def train():
                    if rt.rank() == 1:
                        raise ValueError("bad shard in the script")
                    rt.barrier()

                try:
                    train()
                except rt.RemoteError as e:
                    print(e.remote_traceback)
            """))
        result = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=120, cwd=tmp)
    assert result.returncode == 0, result.stderr
    assert f'File "{path}", line 7, in train' in result.stdout, result.stdout
    assert 'raise ValueError("bad shard in the script")' in result.stdout
