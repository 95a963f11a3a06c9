"""The cog SDK's version without importing cog (which imports structlog, pydantic...) or
importlib.metadata (~6 MB of resident memory for one string)."""

import importlib.util
import os

_WS = " \t\n\r\f\v"
_QUOTES = "'\""


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
    return _version_in(text)


def _skip_ws(text, i):
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _word_end(text, i):
    while i < len(text) and (text[i].isalnum() or text[i] == "_"):
        i += 1
    return i


def _version_at(text, i):
    """The version of a `__version__` line starting at i, or None. The grammar:
    __version__ [: annotation] = (name =)* 'value' (quotes of either kind, none inside)."""
    i = _skip_ws(text, i + len("__version__"))
    if i < len(text) and text[i] == ":":
        j = i
        while j < len(text) and text[j] not in "=\n":
            j += 1
        i = j
    if i >= len(text) or text[i] != "=":
        return None
    i = _skip_ws(text, i + 1)
    while True:  # chained assignments: version = __version__ = '...'
        j = _word_end(text, i)
        k = _skip_ws(text, j)
        if j == i or k >= len(text) or text[k] != "=":
            break
        i = _skip_ws(text, k + 1)
    if i >= len(text) or text[i] not in _QUOTES:
        return None
    j = i + 1
    while j < len(text) and text[j] not in _QUOTES:
        j += 1
    return text[i + 1 : j] if j < len(text) and j > i + 1 else None


def _version_in(text):
    """What the regex ^__version__\\s*(?::[^=\\n]*)?=\\s*(?:\\w+\\s*=\\s*)*['"]([^'"]+)['"]
    (multiline) finds, without importing re (~2.5 ms of start-up)."""
    i = 0
    while True:
        i = text.find("__version__", i)
        if i < 0:
            return None
        if i == 0 or text[i - 1] == "\n":
            v = _version_at(text, i)
            if v is not None:
                return v
        i += len("__version__")
