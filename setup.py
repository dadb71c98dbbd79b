"""Builds the jpegfreq C extension; metadata lives in pyproject.toml.

libjpeg(-turbo) is looked up in this order, and the search is printed:
  1. JPEGFREQ_LIBJPEG_DIR (a prefix with include/ and lib/),
  2. pkg-config libjpeg,
  3. the compiler's default paths (/usr/include, /usr/local/include, multiarch).
"""
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy
from setuptools import Extension, setup

HINT = (
    "jpegfreq needs the libjpeg-turbo headers and library.\n"
    "  Debian/Ubuntu: apt-get install libjpeg62-turbo-dev   (or libjpeg-turbo8-dev)\n"
    "  Fedora:        dnf install libjpeg-turbo-devel\n"
    "  macOS:         brew install jpeg-turbo\n"
    "or point JPEGFREQ_LIBJPEG_DIR at a prefix holding include/jpeglib.h and lib/libjpeg.*"
)


def log(msg):
    print(f"jpegfreq setup: {msg}", file=sys.stderr)


def find_libjpeg():
    prefix = os.environ.get("JPEGFREQ_LIBJPEG_DIR")
    if prefix:
        inc, lib = os.path.join(prefix, "include"), os.path.join(prefix, "lib")
        log(f"JPEGFREQ_LIBJPEG_DIR={prefix}")
        if os.path.exists(os.path.join(inc, "jpeglib.h")):
            return [inc], [lib], ["jpeg"]
        sys.exit(f"no jpeglib.h under {inc}\n{HINT}")
    if shutil.which("pkg-config"):
        try:
            cflags = subprocess.check_output(["pkg-config", "--cflags-only-I", "libjpeg"], text=True)
            libs = subprocess.check_output(["pkg-config", "--libs", "libjpeg"], text=True)
            incs = [f[2:] for f in cflags.split() if f.startswith("-I")]
            libdirs = [f[2:] for f in libs.split() if f.startswith("-L")]
            names = [f[2:] for f in libs.split() if f.startswith("-l")] or ["jpeg"]
            log(f"pkg-config libjpeg: include {incs or 'default'}, lib {libdirs or 'default'}")
            return incs, libdirs, names
        except subprocess.CalledProcessError:
            log("pkg-config does not know libjpeg")
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for inc in ["/usr/include", "/usr/local/include", "/opt/homebrew/include",
                "/opt/homebrew/opt/jpeg-turbo/include", "/usr/local/opt/jpeg-turbo/include"]:
        log(f"looking for {inc}/jpeglib.h")
        if os.path.exists(os.path.join(inc, "jpeglib.h")):
            lib = os.path.join(os.path.dirname(inc), "lib")
            libdirs = [d for d in [lib, os.path.join(lib, multiarch)] if os.path.isdir(d)]
            return [inc], libdirs, ["jpeg"]
    sys.exit(f"libjpeg not found.\n{HINT}")


incs, libdirs, libs = find_libjpeg()
ext = Extension(
    "jpegfreq._jpegfreq",
    sources=["csrc/_jpegfreq.c", "csrc/jf_read.c", "csrc/jf_resample.c", "csrc/jf_cube.c",
             "csrc/jf_photo.c", "csrc/jf_convert.c"],
    depends=["csrc/jf_core.h", "csrc/jf_cube_impl.h"],
    include_dirs=["csrc", numpy.get_include(), *incs],
    library_dirs=libdirs,
    libraries=libs,
    extra_compile_args=["-O3", "-std=c99", "-ffp-contract=fast", "-D_DEFAULT_SOURCE", "-Wall", "-Wno-unused-function", "-Wno-format-truncation", "-Wno-psabi"],
)
setup(ext_modules=[ext])
