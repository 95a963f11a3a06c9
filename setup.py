"""Builds coglet._impl from csrc/, and coglet._curl_shim from csrc/shim/ (the object libcurl is
loaded through; docs/architecture.md, Packaging).

System libraries come from pkg-config (libuv, jansson, libcurl, pcre2, hiredis); llhttp is a system
libllhttp when pkg-config knows one, else compiled from the C sources Debian's
node-llhttp ships. Anything missing stops the build with one line naming the package.

The version is pyproject.toml's (`[project] version`), the only place it is written; the C
sources are csrc/sources.mk's groups; the build stamp is one generated header. Builds are
incremental: see BuildExt.
"""

import datetime
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from distutils import log  # setuptools' own copy once setuptools is imported

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES_MK = os.path.join("csrc", "sources.mk")
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


def source_groups():
    """csrc/sources.mk's two groups: (plain C, Python). The rule is the one sources.mk applies:
    every .c under a COGLET_PY_DIRS directory is Python, every other .c under csrc/ plain, and
    the COGLET_SEPARATE_DIRS directories (their own shared objects) neither."""
    with open(SOURCES_MK, encoding="utf-8") as f:
        text = f.read()

    def dirs(name):
        m = re.search(r"^%s\s*=(.*)$" % name, text, re.M)
        if not m:
            die("%s has no %s line" % (SOURCES_MK, name))
        return tuple("csrc/%s/" % d for d in m.group(1).split())

    py_dirs, separate = dirs("COGLET_PY_DIRS"), dirs("COGLET_SEPARATE_DIRS")
    every = [s for s in sorted(glob.glob("csrc/**/*.c", recursive=True)) if not s.startswith(separate)]
    return [s for s in every if not s.startswith(py_dirs)], [s for s in every if s.startswith(py_dirs)]


# ---- the build stamp ----
#
# One generated header, <build_base>/gen/coglet_build_info.h, never committed, included by
# csrc/common/build_info.c alone. It is rewritten only when what it says changes, so a build
# at the same commit and dirty state recompiles nothing. The build time is taken when the rest
# of the stamp (version, sha, dirty flag, compiler) changes, not at every build: a time that
# changes every build would make every build recompile; the time the tree first reached this
# state is what it says. SOURCE_DATE_EPOCH, when set, is the time (reproducible builds).

STAMP_HEADER = "coglet_build_info.h"
STAMP_TIME = re.compile(r"^#define COGLET_BUILD_TIME .*$", re.M)


def c_string(v):
    return '"%s"' % v.replace("\\", "").replace('"', "")


def stamp_lines(version, when):
    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return [
        "#define COGLET_VERSION %s" % c_string(version),
        "#define COGLET_GIT_SHA %s" % c_string(sha),
        "#define COGLET_GIT_DIRTY %d" % dirty,
        "#define COGLET_BUILD_TIME %s" % c_string(when),
        "#define COGLET_COMPILER %s" % c_string(compiler_version()),
    ]


def write_build_info(gen_dir, version):
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        if epoch
        else datetime.datetime.now(datetime.timezone.utc)
    )
    text = "\n".join(
        ["/* %s: generated by setup.py, never committed. */" % STAMP_HEADER, "#pragma once"]
        + stamp_lines(version, when.strftime("%Y-%m-%dT%H:%M:%SZ"))
        + [""]
    )
    path = os.path.join(gen_dir, STAMP_HEADER)
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except OSError:
        old = ""
    if epoch or STAMP_TIME.sub("", old) != STAMP_TIME.sub("", text):
        write_if_changed(path, text)
    return path


# ---- incremental builds ----
#
# distutils compiles every source of an extension as soon as any one is newer than the .so,
# and never looks at headers. build_ext here compiles only the objects whose source, headers
# (from the compiler's -MMD depfiles) or compile flags changed, and links only when an object
# or the link line did. A flag change is seen through a fingerprint file rewritten only when
# the flags differ (the stamp header works the same way).


def write_if_changed(path, text):
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def depfile_inputs(obj):
    """The files a -MMD depfile says obj was built from, or None when there is none."""
    try:
        with open(os.path.splitext(obj)[0] + ".d", encoding="utf-8") as f:
            text = f.read().replace("\\\n", " ")
    except OSError:
        return None
    _, _, deps = text.partition(": ")
    return deps.split()


def newer_than(paths, target):
    built = os.path.getmtime(target)
    return any(os.path.getmtime(p) > built for p in paths)


def is_stale(obj, extra_inputs):
    if not os.path.exists(obj):
        return True
    inputs = depfile_inputs(obj)
    if inputs is None:
        return True
    inputs += extra_inputs
    return not all(os.path.exists(p) for p in inputs) or newer_than(inputs, obj)


class BuildExt(build_ext):
    def run(self):
        if shutil.which(os.environ.get("CC", "cc").split()[0]) is None:
            die("no C compiler found: apt-get install build-essential")
        super().run()

    def build_extension(self, ext):
        gen_dir = os.path.join(self.get_finalized_command("build").build_base, "gen")
        write_build_info(gen_dir, self.distribution.get_version())
        include_dirs = ext.include_dirs + [gen_dir]
        cflags = ext.extra_compile_args + ["-MMD"]
        fingerprint = os.path.join(self.build_temp, ext.name + ".cflags")
        write_if_changed(fingerprint, repr((self.compiler.compiler_so, ext.define_macros, include_dirs, cflags)))

        objects = self.compiler.object_filenames(ext.sources, output_dir=self.build_temp)
        stale = [src for src, obj in zip(ext.sources, objects) if self.force or is_stale(obj, [fingerprint])]
        if stale:
            self.compiler.compile(stale, output_dir=self.build_temp, macros=ext.define_macros,
                                  include_dirs=include_dirs, debug=self.debug, extra_postargs=cflags)

        ext_path = self.get_ext_fullpath(ext.name)
        clib_dir = self.get_finalized_command("build_clib").build_clib
        archives = [self.compiler.library_filename(n, output_dir=clib_dir) for n, _ in self.distribution.libraries or []]
        link_key = os.path.join(self.build_temp, ext.name + ".ldflags")
        relink = write_if_changed(link_key, repr((self.compiler.linker_so, objects, ext.extra_link_args)))
        if not (stale or relink or not os.path.exists(ext_path) or newer_than(objects + archives, ext_path)):
            log.info("'%s' is up to date: nothing compiled, nothing linked", ext.name)
            return
        if os.path.exists(ext_path):
            os.remove(ext_path)  # the compiler skips a link whose objects are older than its output
        self.compiler.link_shared_object(
            objects,
            ext_path,
            libraries=self.get_libraries(ext),
            library_dirs=ext.library_dirs,
            runtime_library_dirs=ext.runtime_library_dirs,
            extra_postargs=ext.extra_link_args,
            export_symbols=self.get_export_symbols(ext),
            debug=self.debug,
            build_temp=self.build_temp,
            target_lang="c",
        )


cflags, libs, llhttp_sources = collect_libraries()
plain_sources, py_sources = source_groups()
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
    sources=sorted(plain_sources + py_sources),
    depends=sorted(glob.glob("csrc/**/*.h", recursive=True)) + [SOURCES_MK],
    define_macros=[("Py_LIMITED_API", "0x030A0000"), ("_GNU_SOURCE", "1")],
    extra_compile_args=extra_compile,
    extra_link_args=extra_link + libs,
    py_limited_api=True,
)

# The curl shim: a shared object next to _impl that needs libcurl, so a repaired wheel carries
# libcurl while _impl keeps loading it lazily (webhook/curl_lazy.c looks for this file name;
# docs/architecture.md, Packaging).
curl_shim = Extension(
    "coglet._curl_shim",
    sources=["csrc/shim/curl_shim.c"],
    extra_compile_args=pkg_config("--cflags", "libcurl") + ["-std=gnu11", "-O2", "-fvisibility=hidden",
                                                            "-Wall", "-Wextra", "-Werror"],
    extra_link_args=pkg_config("--libs", "libcurl"),
    py_limited_api=True,
)

setup(
    ext_modules=[ext, curl_shim],
    libraries=llhttp_lib,
    cmdclass={"build_ext": BuildExt},
    options={
        "bdist_wheel": {"py_limited_api": "cp310"},
        # sanitized objects and libraries never mix with the normal build
        "build": {"build_base": os.path.join("build", "asan") if SANITIZE else "build"},
    },
)
