"""The public names resolve, and the pure side never imports torch."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import functional_opt

# ``__main__`` is the command-line entry point, not a module to import.
SUBMODULES = sorted(
    m.name
    for m in pkgutil.iter_modules(functional_opt.__path__, prefix="functional_opt.")
    if m.name != "functional_opt.__main__"
)


def test_submodules_found():
    assert {"functional_opt.config", "functional_opt.schedules", "functional_opt.grouping"} <= set(SUBMODULES)


@pytest.mark.parametrize("name", sorted(functional_opt.__all__))
def test_top_level_name_resolves(name):
    assert getattr(functional_opt, name) is not None


@pytest.mark.parametrize("module_name", SUBMODULES)
def test_submodule_all_resolves(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    assert names, f"{module_name} has no __all__"
    assert len(set(names)) == len(names), f"{module_name}.__all__ lists a name twice"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module_name}.__all__ names what it does not define: {missing}"


def test_top_level_reexports_are_the_submodule_objects():
    from functional_opt import config, schedules

    for name in functional_opt.__all__:
        for module in (config, schedules):
            if name in getattr(module, "__all__", ()):
                assert getattr(functional_opt, name) is getattr(module, name), name


def test_importing_functional_opt_does_not_import_torch():
    code = (
        "import importlib, pkgutil, sys\n"
        "import functional_opt\n"
        "for m in pkgutil.iter_modules(functional_opt.__path__, prefix='functional_opt.'):\n"
        "    if m.name != 'functional_opt.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "loaded = sorted(n for n in sys.modules if n == 'torch' or n.startswith(('torch.', 'torchrec', 'fbgemm')))\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
