from cog import BasePredictor


class Predictor(BasePredictor):
    async def setup(self) -> None:
        pass

    async def predict(self) -> str:
        return "ok"
