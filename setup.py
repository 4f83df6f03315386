"""Build fastdl's compiled extensions.

Environment switches (all optional):
  FASTDL_NATIVE=1   compile for the build machine (-march=native); wheels never do this,
                    they get SIMD through runtime dispatch (include/fastdl/config.h).
  FASTDL_OPENMP=0   build without OpenMP even where the compiler has it (kernels serial).
  FASTDL_ONLY=a,b   development: build only the named extension modules (e.g. _softmax), so
                    several people can rebuild their own module in one checkout at once.
"""

import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent

# One Cython module per op family (DESIGN.md), found by name: a new family needs no edit here.
MODULES = sorted(p.stem for p in (HERE / "src" / "fastdl" / "_ext").glob("_*.pyx"))

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}

OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
""")


def _flag(name, default="0"):
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes", "on")


def _probe_openmp(compiler):
    """Compile and link a tiny OpenMP program; return (cflags, ldflags) or None."""
    if sys.platform == "darwin":
        prefixes = [os.environ.get("OPENMP_PREFIX", ""), "/opt/homebrew/opt/libomp",
                    "/usr/local/opt/libomp"]
        candidates = [(["-Xpreprocessor", "-fopenmp", f"-I{p}/include"], [f"-L{p}/lib", "-lomp"])
                      for p in prefixes if p]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    tmp = tempfile.mkdtemp(prefix="fastdl-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        for cflags, ldflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=ldflags)
                return cflags, ldflags
            except Exception:  # any compile or link failure means "not this way"
                continue
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        cflags = ["-O3", "-fno-math-errno", "-Wno-unused-function"]
        ldflags = []
        if _flag("FASTDL_NATIVE"):
            cflags += ["-march=native"]
            for ext in self.extensions:
                ext.define_macros.append(("FASTDL_NATIVE", "1"))
        omp = None if not _flag("FASTDL_OPENMP", "1") else _probe_openmp(self.compiler)
        if omp is None:
            self.warn("fastdl: OpenMP not available (or FASTDL_OPENMP=0): building without "
                      "it, every kernel will run on one thread")
        else:
            cflags += omp[0]
            ldflags += omp[1]
        # Flags come from the environment (FASTDL_NATIVE, FASTDL_OPENMP), which setuptools'
        # up-to-date check cannot see: always recompile rather than reuse stale objects.
        self.force = True
        for ext in self.extensions:
            ext.extra_compile_args = cflags + list(ext.extra_compile_args or [])
            ext.extra_link_args = ldflags + list(ext.extra_link_args or [])
        super().build_extensions()


def extensions():
    include = [os.path.join("include"), numpy.get_include()]
    only = [m.strip() for m in os.environ.get("FASTDL_ONLY", "").split(",") if m.strip()]
    exts = [
        Extension(
            f"fastdl._ext.{name}",
            [os.path.join("src", "fastdl", "_ext", f"{name}.pyx")],
            include_dirs=include,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            libraries=["dl"] if sys.platform.startswith("linux") else [],
        )
        for name in (only or MODULES)
    ]
    return cythonize(exts, compiler_directives=CYTHON_DIRECTIVES,
                     include_path=["src"])


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
