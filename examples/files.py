"""File inputs and outputs.

    python -m coglet files.py:Predictor                                   # outputs as data: URLs
    python -m coglet files.py:Predictor --upload-url http://uploads.local/  # PUT to the URL

`document` may be an http(s) URL or a data: URI; the worker downloads it to a temp file
before predict() runs and deletes that file when the prediction ends. Each yielded file
object becomes one output, in the order yielded: a data: URL, or with --upload-url the URL it
was uploaded to (`PUT {upload-url}/0.txt`, `1.txt`, ...: file objects are saved as
`{n}.{extension of their name}` first).
"""

import io
from typing import Iterator

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self,
        document: Path = Input(description="A text file: URL or data: URI"),
        copies: int = Input(description="How many upper-cased copies", default=1, ge=1, le=5),
    ) -> Iterator[Path]:
        text = document.read_text()
        print(f"read {len(text)} characters from {document.name}")
        for i in range(copies):
            out = io.BytesIO(text.upper().encode())
            out.name = f"upper-{i}.txt"  # its extension gives the MIME type (text/plain)
            yield out
