"""Pull mode as a fleet (docs/queue.md, "A fleet"): several consumers on one stream, leases
and reclaim, no second run of a finished prediction, Redis restarts, the pause switch, slots
shared with HTTP."""

import collections
import json
import signal
import time

import requests

from conftest import PORT_RE, SLOW
from queue_helpers import make_consumer, redis_srv  # noqa: F401 (fixtures)
from receivers import make_receiver  # noqa: F401
from test_queue import ECHO, GATED, wait_until

NOOP = """
from cog import BasePredictor
class Predictor(BasePredictor):
    def predict(self, i: int = 0) -> int:
        return i
"""

LEASE = {"COGLET_QUEUE_LEASE": "1"}


def test_four_consumers_drain_2000_without_loss_or_duplicates(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    (tmp_path / "predict.py").write_text(NOOP)
    for k in range(4):
        make_consumer(redis_srv, "q", "c%d" % k, where=tmp_path)
    pipe = redis_srv.client.pipeline(transaction=False)
    for i in range(2000):
        pipe.xadd("q", {"value": json.dumps({"id": "p%d" % i, "input": {"i": i}, "webhook": rx.url,
                                             "webhook_events_filter": ["completed"]})})
    pipe.execute()
    rx.wait_for(lambda hs: len(hs) >= 2000, timeout=120, what="2000 terminal webhooks")
    redis_srv.wait_pending("q", 0, timeout=30)
    time.sleep(0.3)
    hits = rx.snapshot()
    counts = collections.Counter(h.body["id"] for h in hits)
    assert len(counts) == 2000 and set(counts.values()) == {1}
    assert all(h.body["output"] == int(h.body["id"][1:]) for h in hits)
    assert redis_srv.client.xlen("q") == 0
    # every consumer took a share
    per = collections.Counter(c["name"] for c in redis_srv.client.xinfo_consumers("q", "q"))
    assert len(per) == 4


def test_a_killed_consumer_s_message_is_finished_by_another(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    runs = tmp_path / "runs"
    gate = tmp_path / "gate"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_consumer(redis_srv, "q", "a", code=GATED, where=tmp_path / "a", env=LEASE)
    redis_srv.add("q", {"id": "p1", "input": {"gate": str(gate), "runs": str(runs)}, "webhook": rx.url})
    rx.wait_count(1, "p1")
    a.stop(signal.SIGKILL)
    gate.write_text("")  # the next run goes through
    make_consumer(redis_srv, "q", "b", code=GATED, where=tmp_path / "b", env=LEASE)
    final = rx.wait_terminal("p1", timeout=20)
    assert final["status"] == "succeeded"
    assert runs.read_text().count("run") == 2
    redis_srv.wait_pending("q", 0)
    assert redis_srv.client.xlen("q") == 0


def test_a_finished_prediction_is_not_run_again_on_redelivery(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver(hang=True)  # a's terminal webhook never completes
    runs = tmp_path / "runs"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_consumer(redis_srv, "q", "a", code=GATED, where=tmp_path / "a", env=LEASE)
    msg = {"id": "p1", "input": {"runs": str(runs)}, "webhook": rx.url, "webhook_events_filter": ["completed"]}
    redis_srv.add("q", msg)
    first = rx.wait_count(1, "p1")[0].body
    assert first["status"] == "succeeded"
    a.stop(signal.SIGKILL)  # before its acknowledgement
    # the same message's webhook now answers (the platform came back)
    rx._default = 200
    rx._released.set()
    make_consumer(redis_srv, "q", "b", code=GATED, where=tmp_path / "b", env=LEASE)
    wait_until(lambda: len(rx.for_id("p1")) >= 2, timeout=20, what="the terminal response sent again")
    again = rx.for_id("p1")[1].body
    assert again == first  # the same response, completed_at and all
    assert runs.read_text().count("run") == 1
    redis_srv.wait_pending("q", 0)


def test_a_live_long_prediction_keeps_its_lease(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    runs = tmp_path / "runs"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    make_consumer(redis_srv, "q", "a", code=GATED, where=tmp_path / "a", env=LEASE)
    redis_srv.add("q", {"id": "p1", "input": {"sleep": 3.5, "runs": str(runs)}, "webhook": rx.url})
    rx.wait_count(1, "p1")
    b = make_consumer(redis_srv, "q", "b", code=GATED, where=tmp_path / "b", env=LEASE)
    assert rx.wait_terminal("p1", timeout=20)["status"] == "succeeded"
    assert runs.read_text().count("run") == 1
    assert len(rx.terminal("p1")) == 1
    assert "reclaimed" not in b.log_text()


def test_redis_restart_mid_run(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    gate = tmp_path / "gate"
    c = make_consumer(redis_srv, "q", "c1", code=GATED)
    redis_srv.add("q", {"id": "p1", "input": {"gate": str(gate)}, "webhook": rx.url})
    rx.wait_count(1, "p1")
    redis_srv.restart()  # SHUTDOWN NOSAVE: the stream and the group are gone
    c.wait_log("connection to .* lost")
    gate.write_text("")
    assert rx.wait_terminal("p1", timeout=20)["status"] == "succeeded"
    c.wait_log("reader connection to .* up", timeout=40)
    for i in range(2, 6):
        redis_srv.add("q", {"id": "p%d" % i, "input": {}, "webhook": rx.url})
    for i in range(2, 6):
        assert rx.wait_terminal("p%d" % i, timeout=20)["status"] == "succeeded"
    redis_srv.wait_pending("q", 0)


def test_redis_down_at_start_then_up(make_consumer, make_receiver, tmp_path):
    from queue_helpers import RedisServer

    rx = make_receiver()
    srv = RedisServer()
    port = srv.port
    srv.stop()
    try:
        c = make_consumer(srv, "q", "c1", code=ECHO, wait=r"Setup complete")
        time.sleep(0.3)
        srv.port = port
        srv.start()
        c.wait_log("created consumer group q", timeout=40)  # at $: what came before is not ours
        srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
        assert rx.wait_terminal("p1", timeout=20)["status"] == "succeeded"
    finally:
        srv.stop()


def test_pause_and_resume(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    c = make_consumer(redis_srv, "q", "c1", code=ECHO)
    blocked = lambda: redis_srv.client.info("clients")["blocked_clients"]  # noqa: E731
    redis_srv.client.set("coglet:q:pause", "1")
    c.wait_log("paused")
    wait_until(lambda: blocked() == 0, what="the blocked read released")
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
    time.sleep(0.5)
    assert rx.snapshot() == [] and redis_srv.pending("q") == 0
    redis_srv.client.delete("coglet:q:pause")
    c.wait_log("resumed")
    assert rx.wait_terminal("p1")["status"] == "succeeded"
    # one consumer alone
    redis_srv.client.set("coglet:q:pause:c1", "1")
    wait_until(lambda: c.log_text().count("paused: claiming nothing new") == 2, what="the second pause")
    wait_until(lambda: blocked() == 0, what="the blocked read released")
    redis_srv.add("q", {"id": "p2", "input": {}, "webhook": rx.url})
    time.sleep(0.5)
    assert rx.for_id("p2") == []
    redis_srv.client.set("coglet:q:pause:c1", "0")
    assert rx.wait_terminal("p2")["status"] == "succeeded"


def test_claims_no_more_than_its_free_slots(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    gate = tmp_path / "gate"
    code = """
import asyncio, os
from cog import BasePredictor
class Predictor(BasePredictor):
    async def predict(self, gate: str = "") -> str:
        while gate and not os.path.exists(gate):
            await asyncio.sleep(0.01)
        return "done"
"""
    make_consumer(redis_srv, "q", "c1", code=code, env={"COG_MAX_CONCURRENCY": "2"})
    for i in range(5):
        redis_srv.add("q", {"id": "p%d" % i, "input": {"gate": str(gate)}, "webhook": rx.url})
    wait_until(lambda: len(rx.snapshot()) >= 2, what="two starts")
    time.sleep(0.5)
    assert redis_srv.pending("q") == 2
    assert len(rx.snapshot()) == 2
    gate.write_text("")
    for i in range(5):
        assert rx.wait_terminal("p%d" % i)["status"] == "succeeded"
    redis_srv.wait_pending("q", 0)


def test_http_and_queue_share_the_slots(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    gate = tmp_path / "gate"
    c = make_consumer(redis_srv, "q", "c1", code=GATED, args=("--port", "0", "--host", "127.0.0.1"))
    url = "http://127.0.0.1:%d" % int(PORT_RE.search(c.wait_log(PORT_RE.pattern)).group(1))
    blocked = lambda: redis_srv.client.info("clients")["blocked_clients"]  # noqa: E731
    wait_until(lambda: blocked() == 1, what="the consumer waiting on the stream")
    r = requests.post(url + "/predictions", json={"input": {"gate": str(gate)}},
                      headers={"Prefer": "respond-async"}, timeout=10)
    assert r.status_code == 202
    # the consumer's blocked read is released once HTTP holds the only slot
    wait_until(lambda: blocked() == 0, what="the read released")
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
    time.sleep(0.5)
    assert redis_srv.pending("q") == 0 and rx.snapshot() == []  # the one slot is HTTP's
    gate.write_text("")
    assert rx.wait_terminal("p1")["status"] == "succeeded"
    # and a busy queue makes HTTP answer 409
    gate.unlink()
    redis_srv.add("q", {"id": "p2", "input": {"gate": str(gate)}, "webhook": rx.url})
    rx.wait_count(1, "p2")
    assert requests.post(url + "/predictions", json={"input": {}}, timeout=10).status_code == 409
    gate.write_text("")
    assert rx.wait_terminal("p2")["status"] == "succeeded"


class FreezingProxy:
    """A TCP proxy to Redis that can go silent without closing anything: the network loss
    that no FIN or RST announces."""

    def __init__(self, target_port):
        import socket
        import threading

        self.target = target_port
        self.frozen = threading.Event()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if self.frozen.is_set():
                self.conns.append(c)  # accepted, never answered
                continue
            u = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b):
        while True:
            try:
                data = a.recv(65536)
            except OSError:
                return
            if not data:
                return
            while self.frozen.is_set():
                time.sleep(0.05)
                if getattr(self, "dead", False):
                    return
            try:
                b.sendall(data)
            except OSError:
                return

    def freeze(self):
        self.frozen.set()
        self.old = list(self.conns)

    def thaw_new_connections(self):
        """New connections work again; the frozen ones stay dead."""
        self.dead = True
        self.frozen.clear()

    def close(self):
        self.dead = True
        self.lsock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def test_a_silent_connection_is_declared_dead_within_the_idle_timeout(redis_srv, make_consumer, make_receiver,
                                                                       tmp_path):
    rx = make_receiver()
    proxy = FreezingProxy(redis_srv.port)
    try:
        c = make_consumer(redis_srv, "q", "c1", code=ECHO, redis_url="redis://127.0.0.1:%d/0" % proxy.port,
                          env={"COGLET_QUEUE_IDLE_TIMEOUT": "1", "COGLET_QUEUE_LEASE": "1.5"})
        redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
        assert rx.wait_terminal("p1")["status"] == "succeeded"
        proxy.freeze()
        c.wait_log("commands connection to .* lost \\(no reply within the read-idle timeout\\)")
        c.wait_log("reader connection to .* lost \\(no reply within the read-idle timeout\\)")
        proxy.thaw_new_connections()
        wait_until(lambda: c.log_text().count("reader connection to") >= 3, timeout=30, what="the reader back")
        redis_srv.add("q", {"id": "p2", "input": {}, "webhook": rx.url})
        assert rx.wait_terminal("p2", timeout=20)["status"] == "succeeded"
    finally:
        proxy.close()


def test_an_idle_consumer_does_not_poll(redis_srv, make_consumer):
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    time.sleep(0.3)

    def processed():
        return redis_srv.client.info("stats")["total_commands_processed"]

    before = processed()
    time.sleep(2)
    after = processed()
    # the pause keys once a second and a blocking read every 10 s; the INFO calls count too
    assert after - before <= 8


def test_ref_from_cog_yaml(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    (tmp_path / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
    make_consumer(redis_srv, "q", "c1", code=ECHO, ref=None)
    redis_srv.add("q", {"id": "p1", "input": {"text": "y"}, "webhook": rx.url})
    assert rx.wait_terminal("p1")["output"] == "hi y"


def test_a_restarted_consumer_takes_back_its_own_messages_at_once(redis_srv, make_consumer, make_receiver,
                                                                  tmp_path):
    rx = make_receiver()
    gate = tmp_path / "gate"
    runs = tmp_path / "runs"
    a = make_consumer(redis_srv, "q", "c1", code=GATED)  # the default 30 s lease
    redis_srv.add("q", {"id": "p1", "input": {"gate": str(gate), "runs": str(runs)}, "webhook": rx.url})
    rx.wait_count(1, "p1")
    a.stop(signal.SIGKILL)
    gate.write_text("")
    make_consumer(redis_srv, "q", "c1", code=GATED)  # same name: its pending entries are its own
    assert rx.wait_terminal("p1", timeout=10)["status"] == "succeeded"  # well within the lease
    assert runs.read_text().count("run") == 2
    redis_srv.wait_pending("q", 0)
