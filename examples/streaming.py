"""A streaming predictor: every yielded item reaches the client as soon as it is produced
(an `output` webhook, an SSE `output` event), not when the generator is exhausted.

    python -m coglet streaming.py:Predictor
    curl -s localhost:5000/predictions -H 'Content-Type: application/json' \
         -d '{"input": {"prompt": "the quick brown fox"}}'
    # {"id":"...","logs":"streaming 4 words\n","metrics":{...},"output":["the","quick","brown","fox"],...}
"""

import time
from typing import Iterator

from cog import BasePredictor, Input, streaming


class Predictor(BasePredictor):
    @streaming  # lets `cog build` mark the schema, so clients may ask for SSE
    def predict(
        self,
        prompt: str = Input(description="Words to stream back", default="hello streaming world"),
        delay: float = Input(description="Seconds between words", default=0.0, ge=0, le=5),
    ) -> Iterator[str]:
        words = prompt.split()
        print(f"streaming {len(words)} words")
        for word in words:
            yield word
            time.sleep(delay)
