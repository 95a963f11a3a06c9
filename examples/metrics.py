"""Metrics and request context.

    python -m coglet metrics.py:Runner
    curl -s localhost:5000/predictions -H 'Content-Type: application/json' \
         -d '{"input": {"prompt": "a small red fox"}, "context": {"user": "ada"}}'
    # "metrics":{"cache":["miss"],"predict_time":0.0004,"temperature":0.7,
    #            "timing":{"preprocess":0.001},"token_count":4},"output":"fox red small a (for ada)"
"""

import time

from cog import BaseRunner, Input, current_scope


class Runner(BaseRunner):
    def setup(self) -> None:
        # Outside a prediction current_scope() is a no-op scope (never None): this is ignored.
        current_scope().record_metric("ignored", 1)

    def run(self, prompt: str = Input(description="Words to reverse", default="a cat")) -> str:
        started = time.perf_counter()
        words = prompt.split()
        self.record_metric("timing.preprocess", round(time.perf_counter() - started, 3))
        self.record_metric("temperature", 0.7)
        for _ in words:
            self.record_metric("token_count", 1, mode="incr")
        current_scope().metrics.record("cache", "miss", mode="append")
        user = self.scope.context.get("user", "anonymous")
        return " ".join(reversed(words)) + f" (for {user})"
