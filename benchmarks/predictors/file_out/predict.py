import os
import tempfile

from cog import BasePredictor, Path

SIZE = int(os.environ.get("BENCH_FILE_BYTES", str(64 * 1024 * 1024)))


class Predictor(BasePredictor):
    def setup(self) -> None:
        # Written once (run.py points BENCH_FILE_DIR at its scratch directory and deletes it at
        # the end); every prediction returns the same file, which the server reads and turns into
        # a data: URI or uploads. Neither server deletes a returned Path.
        d = os.environ.get("BENCH_FILE_DIR") or tempfile.gettempdir()
        self.path = os.path.join(d, "coglet-bench-out-%d.bin" % SIZE)
        if os.path.exists(self.path) and os.path.getsize(self.path) == SIZE:
            return
        tmp = "%s.%d.tmp" % (self.path, os.getpid())
        block = os.urandom(1024 * 1024)
        with open(tmp, "wb") as f:
            for _ in range(SIZE // len(block)):
                f.write(block)
            f.write(block[: SIZE % len(block)])
        os.replace(tmp, self.path)

    def predict(self) -> Path:
        return Path(self.path)
