"""Build hook: compile the native exec stage, a standalone program rather than an extension.

The stage is declared as an optional Extension so setuptools' build_ext machinery (build dirs,
in-place/editable builds, wheel contents, platform tags) handles it; only the final link differs.
Builds are tried best first (see the header of stage.c for why):

1. freestanding: no C library at all (x86_64 and aarch64), checked by running it once;
2. static against the C library (LD_PRELOAD in the program's environment cannot reach it);
3. dynamic against the C library.

If none works (no compiler), the build warns and carries on, and hardexec uses its pure-Python
twin of the stage.

The build also writes the native syscall table for seccomp filters, from the kernel headers, as
hardexec/confine/_syscalls.json (see confine/syscalls.py); without a compiler or headers it warns
and hardexec reads the headers at run time instead.

The same compiler builds the ``hardexec`` command's front (stage/front.c), which then replaces
the shell script bin/hardexec among the installed scripts: both start hardexec's Python
isolated, but only the compiled one passes the environment on byte for byte.
"""

import importlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CCompilerError, CompileError, LinkError

# distutils as setuptools provides it (there is none in the standard library from 3.12 on): by
# name, after setuptools is imported, so that it is setuptools' copy.
build_scripts = importlib.import_module("distutils.command.build_scripts").build_scripts

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
    def run(self):
        super().run()
        self._build_front()

    def _build_front(self):
        """Compile the command's front; on success it is installed as ``hardexec``."""
        out_dir = os.path.join(self.build_temp, "front-bin")
        try:
            objects = self.compiler.compile(
                ["src/hardexec/stage/front.c"],
                output_dir=os.path.join(self.build_temp, "front"),
                extra_postargs=["-O2", "-Wall", "-Wextra"],
            )
            self.compiler.link_executable(objects, "hardexec", output_dir=out_dir)
        except (CCompilerError, CompileError, LinkError, OSError) as exc:
            self.warn(f"hardexec command: front build failed ({exc}); the shell front is used")
            return
        front = os.path.join(out_dir, "hardexec")
        os.chmod(front, 0o755)
        self.distribution.hardexec_front = front  # BuildScripts puts it in bin/hardexec's place
        self.announce("hardexec command: compiled front", level=2)

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


class BuildScripts(build_scripts):
    """bin/hardexec, replaced by the compiled front when there is one (build_scripts itself
    reads every script as text, so the binary is put in place after it)."""

    def run(self):
        super().run()
        front = getattr(self.distribution, "hardexec_front", None)
        if front and os.path.exists(front):
            target = os.path.join(self.build_dir, "hardexec")
            shutil.copyfile(front, target)
            os.chmod(target, 0o755)


class BuildPy(build_py):
    """The pure-Python build, then the native syscall table as JSON beside confine/syscalls.py."""

    def run(self):
        super().run()
        self._syscall_table()

    def _syscall_table(self):
        # syscalls.py by path, on its own: hardexec is not importable yet, and the module needs
        # only the standard library to generate the table.
        source = os.path.join("src", "hardexec", "confine", "syscalls.py")
        spec = importlib.util.spec_from_file_location("_hardexec_build_syscalls", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        target = os.path.join(self.build_lib, "hardexec", "confine", module.PACKAGED)
        try:
            document = module.build_table()
        except OSError as exc:
            self.warn(f"seccomp: no syscall table generated ({exc}); read at run time instead")
            if os.path.exists(target):
                os.remove(target)  # a stale table of an earlier build must not be installed
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=0, sort_keys=True)
        count = len(document["syscalls"])
        self.announce(f"seccomp: syscall table for {document['arch']} ({count} calls)", level=2)


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
    cmdclass={"build_ext": BuildStage, "build_py": BuildPy, "build_scripts": BuildScripts},
)
