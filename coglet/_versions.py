"""The cog SDK's version without importing cog (which imports structlog, pydantic...) or
importlib.metadata (~6 MB of resident memory for one string)."""

import importlib.util
import os
import re


def cog_version():
    try:
        spec = importlib.util.find_spec("cog")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "_version.py")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    # "__version__ = version = '0.23.1'" (setuptools-scm / vcs-versioning) or plainer forms
    m = re.search(r"""^__version__\s*(?::[^=\n]*)?=\s*(?:\w+\s*=\s*)*['"]([^'"]+)['"]""", text, re.M)
    return m.group(1) if m else None
