"""Import the hivex Python binding, also from a virtualenv that does not see the system's
site-packages.

Debian ships the binding only for its own interpreter (python3-hivex: a `hivex` package and
the `libhivexmod` extension in /usr/lib/python3/dist-packages). The receiver runs in a venv;
when its interpreter has the same ABI as Debian's, the two files are loaded from there by
explicit path, so nothing else of dist-packages shadows the venv's own packages.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Optional, Sequence

from .errors import WindowsFixupError

SYSTEM_DIST_PACKAGES = ("/usr/lib/python3/dist-packages",)
DEBIAN_PACKAGE = "python3-hivex"
EXTENSION = "libhivexmod"


def load_hivex(search: Sequence[str] = SYSTEM_DIST_PACKAGES) -> ModuleType:
    """The `hivex` module; WindowsFixupError naming the package to install otherwise."""
    if "hivex" in sys.modules:
        return sys.modules["hivex"]
    try:
        return importlib.import_module("hivex")
    except ImportError:
        pass
    tried = []
    for directory in search:
        module = _load_from(directory, tried)
        if module is not None:
            return module
    abi = importlib.machinery.EXTENSION_SUFFIXES[0]
    raise WindowsFixupError(
        f"the hivex Python binding is not importable by {sys.executable} (looked for "
        f"{', '.join(tried) or 'hivex'}, ABI {abi}): install the Debian package "
        f"{DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}) for a receiver interpreter of "
        f"the same Python version as /usr/bin/python3, or hivex's bindings into this environment")


def _load_from(directory: str, tried: list) -> Optional[ModuleType]:
    package_init = os.path.join(directory, "hivex", "__init__.py")
    extension = _extension_path(directory)
    tried.append(os.path.join(directory, EXTENSION + importlib.machinery.EXTENSION_SUFFIXES[0]))
    if extension is None or not os.path.isfile(package_init):
        return None
    ext_spec = importlib.util.spec_from_file_location(EXTENSION, extension)
    pkg_spec = importlib.util.spec_from_file_location(
        "hivex", package_init, submodule_search_locations=[os.path.dirname(package_init)])
    if ext_spec is None or pkg_spec is None:
        return None
    try:
        ext = importlib.util.module_from_spec(ext_spec)
        sys.modules[EXTENSION] = ext   # hivex/__init__.py does `import libhivexmod`
        ext_spec.loader.exec_module(ext)
        pkg = importlib.util.module_from_spec(pkg_spec)
        sys.modules["hivex"] = pkg
        pkg_spec.loader.exec_module(pkg)
    except ImportError:
        sys.modules.pop(EXTENSION, None)
        sys.modules.pop("hivex", None)
        return None
    return pkg


def _extension_path(directory: str) -> Optional[str]:
    """The extension built for exactly this interpreter's ABI (never a neighbour's)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if suffix == ".so":
            continue   # untagged: cannot tell which interpreter it was built for
        path = os.path.join(directory, EXTENSION + suffix)
        if os.path.isfile(path):
            return path
    return None
