"""The curl shim (docs/architecture.md, Packaging): `_curl_shim.abi3.so` is installed next to
`_impl`, nothing of libcurl is mapped until the first webhook, and then libcurl is loaded
through the shim (in a wheel, that is the libcurl the wheel carries)."""

import os

import coglet
from receivers import make_receiver  # noqa: F401 (fixture)

PREDICTOR = """
class Predictor:
    def predict(self, text: str = "hi") -> str:
        return text
"""


def mapped(pid):
    with open("/proc/%d/maps" % pid) as f:
        return {line.split()[-1] for line in f if "/" in line}


def test_shim_sits_next_to_the_extension():
    pkg = os.path.dirname(coglet._impl.__file__)
    assert os.path.isfile(os.path.join(pkg, "_curl_shim.abi3.so"))


def test_libcurl_loads_through_the_shim_on_the_first_webhook(make_server, make_receiver):
    rx = make_receiver()
    s = make_server(code=PREDICTOR)
    r = s.predict({"text": "sync"})
    assert r.status_code == 200 and r.json()["output"] == "sync"
    before = mapped(s.proc.pid)
    assert not [p for p in before if "curl" in os.path.basename(p)], before

    r = s.post("/predictions", {"id": "p1", "input": {"text": "hooked"}, "webhook": rx.url},
               headers={"Prefer": "respond-async"})
    assert r.status_code == 202
    assert rx.wait_terminal("p1")["output"] == "hooked"
    after = mapped(s.proc.pid)
    shim = os.path.join(os.path.dirname(coglet._impl.__file__), "_curl_shim.abi3.so")
    assert os.path.realpath(shim) in {os.path.realpath(p) for p in after}, after
    assert [p for p in after if os.path.basename(p).startswith("libcurl")], after
