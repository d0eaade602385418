"""Build hook: compile the native exec stage, a standalone program rather than an extension.

The stage is declared as an optional Extension so setuptools' build_ext machinery (build dirs,
in-place/editable builds, wheel contents, platform tags) handles it; only the final link differs:
an executable, statically linked where the C library allows (no dynamic loader at every spawn,
and LD_PRELOAD in the program's environment cannot reach the stage). If no compiler works, the
build warns and carries on, and hardexec uses its pure-Python twin of the stage.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import LinkError


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
        objects = self.compiler.compile(
            ext.sources, output_dir=self.build_temp, extra_postargs=ext.extra_compile_args
        )
        out_dir, name = os.path.split(target)
        os.makedirs(out_dir, exist_ok=True)
        try:
            self.compiler.link_executable(
                objects, name, output_dir=out_dir, extra_postargs=["-static"]
            )
        except LinkError:
            self.warn("static link of the exec stage failed; linking it dynamically")
            self.compiler.link_executable(objects, name, output_dir=out_dir)
        os.chmod(target, 0o755)


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
