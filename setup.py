"""Builds coglet._impl from csrc/.

System libraries come from pkg-config (libuv, jansson, libcurl, pcre2, hiredis); llhttp is a system
libllhttp when pkg-config knows one, else compiled from the C sources Debian's
node-llhttp ships. Anything missing stops the build with one line naming the package.
"""

import datetime
import glob
import os
import platform
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.24.0"
SANITIZE = os.environ.get("COGLET_SANITIZE", "") not in ("", "0")

# (pkg-config name, Debian package that provides it)
PKGS = [
    ("libuv", "libuv1-dev"),
    ("jansson", "libjansson-dev"),
    ("libcurl", "libcurl4-openssl-dev"),  # headers only: libcurl is dlopen'd on first use
    ("libpcre2-8", "libpcre2-dev"),
    ("hiredis", "libhiredis-dev"),  # pull mode: Redis on the server's libuv loop
]
LLHTTP_SRC_DIR = "/usr/share/llhttp"
LLHTTP_INCLUDE_DIR = "/usr/share/include/llhttp"


def die(msg):
    sys.stderr.write("coglet build: %s\n" % msg)
    sys.exit(1)


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        die("pkg-config not found: apt-get install pkg-config")
    except subprocess.CalledProcessError:
        return None
    return out.stdout.split()


def collect_libraries():
    cflags, libs = [], []
    for name, deb in PKGS:
        if pkg_config("--exists", name) is None:
            die("%s not found by pkg-config: apt-get install %s" % (name, deb))
        cflags += pkg_config("--cflags", name)
        if name != "libcurl":
            libs += pkg_config("--libs", name)
    libs.append("-ldl")
    sources = []  # third-party C compiled without our -Werror (see LLHTTP_LIB)
    if pkg_config("--exists", "libllhttp") is not None:
        cflags += pkg_config("--cflags", "libllhttp")
        libs += pkg_config("--libs", "libllhttp")
    else:
        llhttp_c = [os.path.join(LLHTTP_SRC_DIR, f) for f in ("api.c", "http.c", "llhttp.c")]
        if not all(os.path.exists(p) for p in llhttp_c) or not os.path.exists(
            os.path.join(LLHTTP_INCLUDE_DIR, "llhttp.h")
        ):
            die("llhttp C sources not found in %s: apt-get install node-llhttp" % LLHTTP_SRC_DIR)
        # setuptools wants relative source paths: stage a copy under build/ (never committed)
        staged = os.path.join("build", "llhttp-src")
        os.makedirs(staged, exist_ok=True)
        for src in llhttp_c:
            dst = os.path.join(staged, os.path.basename(src))
            if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
                shutil.copy2(src, dst)
            sources.append(dst)
        cflags.append("-I" + LLHTTP_INCLUDE_DIR)
    libs.append("-lm")
    return cflags, libs, sources


def git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=HERE, check=True, capture_output=True, text=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def compiler_version():
    cc = os.environ.get("CC", "cc").split()[0]
    try:
        out = subprocess.run([cc, "--version"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    first = out.splitlines()[0] if out else ""
    if "clang" in first:
        return "clang " + first.split("version")[-1].split()[0] if "version" in first else first
    return "gcc " + first.split()[-1] if first else "unknown"


def build_macros():
    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        if epoch
        else datetime.datetime.now(datetime.timezone.utc)
    )

    def s(v):
        return '"%s"' % v.replace('"', "")

    return [
        ("COGLET_VERSION", s(VERSION)),
        ("COGLET_GIT_SHA", s(sha)),
        ("COGLET_GIT_DIRTY", "1" if dirty else "0"),
        ("COGLET_BUILD_TIME", s(when.strftime("%Y-%m-%dT%H:%M:%SZ"))),
        ("COGLET_COMPILER", s(compiler_version())),
        ("Py_LIMITED_API", "0x030A0000"),
        ("_GNU_SOURCE", "1"),
    ]


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        # link flags and macros (git sha, build time) change without any source changing
        self.force = True

    def run(self):
        if shutil.which(os.environ.get("CC", "cc").split()[0]) is None:
            die("no C compiler found: apt-get install build-essential")
        super().run()


cflags, libs, llhttp_sources = collect_libraries()
sources = sorted(glob.glob("csrc/**/*.c", recursive=True))
sources = [s for s in sources if "/test/" not in s and "/fuzz/" not in s]
# llhttp's generated C is not -Wextra clean: a static library of its own, its own flags.
llhttp_lib = []
if llhttp_sources:
    llhttp_lib = [("coglet_llhttp", {"sources": llhttp_sources,
                                     "include_dirs": [LLHTTP_INCLUDE_DIR],
                                     "cflags": ["-O2", "-fPIC", "-fvisibility=hidden"]
                                     + (["-fsanitize=address,undefined"] if SANITIZE else [])})]

extra_compile = cflags + ["-std=gnu11", "-fvisibility=hidden", "-Icsrc"]
extra_link = []
if SANITIZE:
    extra_compile += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_link += ["-fsanitize=address,undefined"]
else:
    extra_compile += ["-O2", "-g"]
extra_compile += ["-Wall", "-Wextra", "-Werror"]

ext = Extension(
    "coglet._impl",
    sources=sources,
    define_macros=build_macros(),
    extra_compile_args=extra_compile,
    extra_link_args=extra_link + libs,
    py_limited_api=True,
)

setup(
    version=VERSION,
    ext_modules=[ext],
    libraries=llhttp_lib,
    cmdclass={"build_ext": BuildExt},
    options={
        "bdist_wheel": {"py_limited_api": "cp310"},
        # sanitized objects and libraries never mix with the normal build
        "build": {"build_base": os.path.join("build", "asan") if SANITIZE else "build"},
    },
)
