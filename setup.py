"""Build hook: compile the native exec stage, a standalone program rather than an extension.

The stage is declared as an optional Extension so setuptools' build_ext machinery (build dirs,
in-place/editable builds, wheel contents, platform tags) handles it; only the final link differs.
Builds are tried best first (see the header of stage.c for why):

1. freestanding: no C library at all (x86_64 and aarch64), checked by running it once;
2. static against the C library (LD_PRELOAD in the program's environment cannot reach it);
3. dynamic against the C library.

If none works (no compiler), the build warns and carries on, and hardexec uses its pure-Python
twin of the stage.
"""

import os
import platform
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, LinkError

FREESTANDING_CFLAGS = [
    "-DHX_FREESTANDING",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-stack-protector",  # the canary lives in TLS, which nothing sets up here
    "-fno-tree-loop-distribute-patterns",  # else memcpy's own loop becomes a call to memcpy
    "-fno-asynchronous-unwind-tables",
]
VARIANTS = [
    ("freestanding", FREESTANDING_CFLAGS, ["-nostdlib", "-static", "-no-pie", "-lgcc"]),
    ("libc-static", [], ["-static"]),
    ("libc-dynamic", [], []),
]


class Program(Extension):
    """An Extension that is linked as a standalone executable."""


class BuildStage(build_ext):
    def get_ext_filename(self, fullname):
        # Called with the dotted name, or (from get_ext_fullpath) with its last part only.
        programs = {ext.name for ext in self.extensions if isinstance(ext, Program)}
        programs |= {name.rpartition(".")[2] for name in programs}
        if fullname in programs:
            return os.path.join(*fullname.split("."))  # no EXT_SUFFIX: it is not a module
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        if not isinstance(ext, Program):
            return super().build_extension(ext)
        target = self.get_ext_fullpath(ext.name)
        out_dir, name = os.path.split(target)
        os.makedirs(out_dir, exist_ok=True)
        freestanding_ok = platform.machine() in ("x86_64", "amd64", "aarch64", "arm64")
        errors = []
        for variant, cflags, ldflags in VARIANTS:
            if variant == "freestanding" and not freestanding_ok:
                continue
            try:
                objects = self.compiler.compile(
                    ext.sources,
                    output_dir=os.path.join(self.build_temp, variant),
                    extra_postargs=[*ext.extra_compile_args, *cflags],
                )
                self.compiler.link_executable(
                    objects, name, output_dir=out_dir, extra_postargs=ldflags
                )
                os.chmod(target, 0o755)
                if variant == "freestanding":
                    _smoke_test(target)
            except (CCompilerError, CompileError, LinkError, OSError) as exc:
                errors.append(f"{variant}: {exc}")
                self.warn(f"exec stage: {variant} build failed ({exc}); trying the next")
                continue
            self.announce(f"exec stage built: {variant}", level=2)
            return None
        raise CompileError("no build of the exec stage succeeded: " + "; ".join(errors))


def _smoke_test(path):
    """Run the freestanding stage once: a wrong start-up would crash, not fail to link."""
    if os.path.exists("/bin/true"):
        subprocess.run([path, "--", "/bin/true"], check=True, timeout=30)


setup(
    ext_modules=[
        Program(
            "hardexec.stage.hardexec-stage",
            sources=["src/hardexec/stage/stage.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,  # no compiler: warn, and fall back to the pure-Python twin
        )
    ],
    cmdclass={"build_ext": BuildStage},
)
