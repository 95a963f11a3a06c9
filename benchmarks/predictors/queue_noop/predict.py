# The pull-mode benchmark's predictor: runs under cog 0.6.1's queue worker and under ours.
from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        pass

    def predict(self) -> str:
        return "ok"
