"""An async predictor that serves several predictions at once in one worker.

    COG_MAX_CONCURRENCY=4 python -m coglet async_concurrent.py:Predictor

setup() is async too: what it creates on the event loop (here an asyncio.Lock and an
asyncio.Queue) is usable from every prediction, because setup and all predictions run on the
same loop. Each prediction keeps its own logs, metrics and context even while others run.
"""

import asyncio

from cog import BasePredictor, Input, current_scope


class Predictor(BasePredictor):
    async def setup(self) -> None:
        self.lock = asyncio.Lock()
        self.jobs: asyncio.Queue = asyncio.Queue()
        self.worker = asyncio.create_task(self._work())  # lives as long as the worker
        self.served = 0

    async def _work(self) -> None:
        # one background consumer shared by all predictions
        while True:
            text, done = await self.jobs.get()
            done.set_result(text.upper())

    async def predict(
        self,
        text: str = Input(description="Text to shout", default="hello"),
        delay: float = Input(description="Seconds to wait first", default=0.0, ge=0, le=30),
    ) -> str:
        scope = current_scope()
        user = scope.context.get("user", "anonymous")
        print(f"{text}: queued for {user}")
        await asyncio.sleep(delay)
        done = asyncio.get_running_loop().create_future()
        await self.jobs.put((text, done))
        shouted = await done
        async with self.lock:
            self.served += 1
        scope.record_metric("characters", len(text))
        print(f"{text}: done")
        return shouted
