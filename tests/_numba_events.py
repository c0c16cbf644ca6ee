"""The child-process code the Numba compile tests share (tests/test_nb_compile.py,
tests/test_precompile.py): from where it runs on, every function Numba compiles is
named in the list ``compiled``."""

RECORD_COMPILED = """
from numba.core import event

compiled = []


class Names(event.Listener):
    def on_start(self, ev):
        func = getattr(ev.data["dispatcher"], "py_func", None)
        compiled.append(getattr(func, "__qualname__", str(func)))

    def on_end(self, ev):
        pass


event.register("numba:compile", Names())
"""
