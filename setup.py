"""Build fastdl's compiled extensions.

Environment switches (all optional):
  FASTDL_NATIVE=1   compile for the build machine (-march=native); wheels never do this,
                    they get SIMD through runtime dispatch (include/fastdl/config.h).
  FASTDL_OPENMP=0   build without OpenMP even where the compiler has it (kernels serial).
  FASTDL_ONLY=a,b   development: build only the named extension modules (e.g. _softmax), so
                    several people can rebuild their own module in one checkout at once.
  FASTDL_CUDA=1     also build the CUDA extension fastdl._ext._cuda from the shipped .cu
                    sources (src/fastdl/_ext/cuda/) with nvcc (CUDA toolkit >= 12; nvcc found
                    through $CUDA_HOME/bin, then $PATH). Fails loudly if nvcc is missing. The
                    CUDA runtime is linked statically: the built module needs only the driver;
                    cuBLAS is loaded at run time. Without the switch nothing CUDA is attempted.
  FASTDL_CUDA_ARCH  the architectures compiled (default "80;90": sm_80 and sm_90 code, plus
                    PTX of the newest for forward compatibility).
"""

import os
import shutil
import subprocess
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
# _cuda is built only on request (FASTDL_CUDA=1).
MODULES = sorted(p.stem for p in (HERE / "src" / "fastdl" / "_ext").glob("_*.pyx")
                 if p.stem != "_cuda")
CUDA_DIR = os.path.join("src", "fastdl", "_ext", "cuda")

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


def _find_nvcc():
    """nvcc from $CUDA_HOME/bin, then $PATH; a clear error when asked for CUDA without it."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [os.path.join(home, "bin", "nvcc")] if home else []
    found = shutil.which("nvcc")
    if found:
        candidates.append(found)
    for nvcc in candidates:
        if os.path.isfile(nvcc) and os.access(nvcc, os.X_OK):
            return os.path.realpath(nvcc)
    raise RuntimeError("FASTDL_CUDA=1 but nvcc was not found (looked in $CUDA_HOME/bin and "
                       "$PATH): install the CUDA toolkit (>= 12) or build without FASTDL_CUDA")


def _cuda_lib_dirs(nvcc):
    """Where libcudart_static.a is: under $CUDA_HOME, nvcc's toolkit, or /usr/local/cuda (nvcc
    may be a wrapper script outside its toolkit)."""
    roots = [os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "",
             os.path.dirname(os.path.dirname(nvcc)), "/usr/local/cuda", "/opt/cuda"]
    for root in filter(None, roots):
        for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"),
                    os.path.join("targets", "sbsa-linux", "lib")):
            d = os.path.join(root, sub)
            if os.path.isfile(os.path.join(d, "libcudart_static.a")):
                return [d]
    raise RuntimeError(f"FASTDL_CUDA=1: libcudart_static.a not found near {nvcc} (set "
                       "CUDA_HOME to the toolkit's root)")


def _gencode_flags():
    archs = [a.strip() for a in os.environ.get("FASTDL_CUDA_ARCH", "80;90").replace(",", ";")
             .split(";") if a.strip()]
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    # PTX of the newest architecture: drivers JIT it for GPUs newer than any listed.
    flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    return flags


def _compile_cuda(nvcc, sources, build_temp, include_dirs):
    """nvcc -c each .cu (in parallel), returning the object files."""
    os.makedirs(build_temp, exist_ok=True)
    cmds, objs = [], []
    headers = [p for d in include_dirs for p in Path(d).rglob("*") if p.suffix in (".h", ".cuh")]
    newest_header = max((p.stat().st_mtime for p in headers), default=0.0)
    arch_key = os.environ.get("FASTDL_CUDA_ARCH", "80;90")
    for src in sources:
        obj = os.path.join(build_temp, Path(src).stem + ".cu.o")
        objs.append(obj)
        # nvcc is slow: reuse an object newer than its source and every header, built for the
        # same architectures (recorded beside it).
        stamp = obj + ".arch"
        if (os.path.exists(obj) and os.path.exists(stamp) and open(stamp).read() == arch_key
                and os.path.getmtime(obj) > max(os.path.getmtime(src), newest_header)):
            continue
        if os.path.exists(stamp):
            os.remove(stamp)
        cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
               "--expt-relaxed-constexpr", "-lineinfo"] + _gencode_flags()
        for d in include_dirs:
            cmd += ["-I", d]
        cmds.append((cmd, stamp))
    jobs = max(1, min(len(cmds), os.cpu_count() or 1))
    running = []

    def finish(proc, stamp):
        if proc.wait() != 0:
            raise RuntimeError("nvcc failed (see the messages above)")
        with open(stamp, "w") as f:
            f.write(arch_key)

    for cmd, stamp in cmds:
        print(" ".join(cmd), flush=True)
        running.append((subprocess.Popen(cmd), stamp))
        if len(running) >= jobs:
            finish(*running.pop(0))
    for proc, stamp in running:
        finish(proc, stamp)
    return objs


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
            if ext.name == "fastdl._ext._cuda":
                self._prepare_cuda(ext)
        super().build_extensions()

    def _prepare_cuda(self, ext):
        nvcc = _find_nvcc()
        sources = sorted(str(p) for p in Path(CUDA_DIR).glob("*.cu"))
        objs = _compile_cuda(nvcc, sources, os.path.join(self.build_temp, "cuda"),
                             ["include", CUDA_DIR])
        ext.extra_objects = objs
        ext.library_dirs = _cuda_lib_dirs(nvcc)
        # The runtime statically: the wheel needs only the driver (libcuda, dlopen'ed by it).
        ext.libraries = ["cudart_static", "rt", "pthread", "dl", "stdc++"]


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
        if name != "_cuda"
    ]
    if _flag("FASTDL_CUDA") and (not only or "_cuda" in only):
        exts.append(Extension(
            "fastdl._ext._cuda",
            [os.path.join("src", "fastdl", "_ext", "_cuda.pyx")],
            include_dirs=include + [CUDA_DIR],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    return cythonize(exts, compiler_directives=CYTHON_DIRECTIVES,
                     include_path=["src"])


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
