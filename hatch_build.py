"""The wheel's build hook: compile the C kernel into the wheel.

hatchling runs this for ``python -m build`` / ``pip wheel``. It builds the kernel once per
instruction-set level (src/crossentropy/torch/_build.py says which, with which flags) into
``crossentropy/torch/_prebuilt/`` of the wheel, and tags the wheel ``py3-none-<platform>``:
the libraries are loaded through ctypes, so they depend on the platform, not on the Python
version or its ABI. Without a C compiler, or if a build fails, the wheel is built pure, as
before, and says so: the kernel is then compiled at its first use. An editable install
ships nothing (the source tree's kernel is compiled at first use).
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from packaging.tags import sys_tags

_BUILD = Path(__file__).parent / "src" / "crossentropy" / "torch" / "_build.py"


def _build_module() -> Any:
    spec = importlib.util.spec_from_file_location("_crossentropy_kernel_build", _BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _platform_tag() -> str:
    """This machine's platform tag, as hatchling infers it (the plain ``linux_*`` tag, not
    a manylinux one, which only a tool such as auditwheel may grant)."""
    return next(
        tag.platform
        for tag in sys_tags()
        if "manylinux" not in tag.platform and "musllinux" not in tag.platform
    )


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        kernel = _build_module()
        compiler = kernel.find_compiler()
        if compiler is None:
            self._say("no C compiler found (set CC, or install gcc or clang)")
            return
        self._scratch = Path(tempfile.mkdtemp(prefix="crossentropy-kernel-"))
        built = {}
        try:
            for name, flags in kernel.prebuilt_flags(platform.machine()).items():
                target = self._scratch / f"{name}.so"
                kernel.build(compiler, flags, target)
                built[str(target)] = f"crossentropy/torch/{kernel.PREBUILT_DIR}/{name}.so"
        except RuntimeError as error:
            self._say(str(error))
            return
        build_data["force_include"].update(built)
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-{_platform_tag()}"
        names = ", ".join(Path(path).stem for path in built)
        print(f"crossentropy: the wheel ships the compiled kernel ({names})", file=sys.stderr)

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    def _say(self, reason: str) -> None:
        print(
            f"crossentropy: building a pure-Python wheel without the compiled kernel ({reason}); "
            f"it will be compiled at its first use, which needs a C compiler then",
            file=sys.stderr,
        )
