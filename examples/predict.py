"""A small predictor: `make serve` serves it on port 5000.

    curl -s localhost:5000/predictions -H 'Content-Type: application/json' \
         -d '{"input": {"text": "world"}}'
"""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.greeting = "Hello"
        print("setup: greeting loaded")

    def predict(
        self,
        text: str = Input(description="Who to greet", default="world"),
        repeat: int = Input(description="How many times", default=1, ge=1, le=10),
    ) -> str:
        print(f"greeting {text!r} x{repeat}")
        return " ".join([f"{self.greeting}, {text}!"] * repeat)
