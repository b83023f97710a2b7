"""The BentoML side of the comparison, the way BentoML's own examples serve each task:
SO1S_COMPARE_MODEL names the model directory, SO1S_COMPARE_THREADS the torch intra-op
threads.

- Embedder: sentence-transformers behind a batchable API (adaptive batching, up to 32 texts).
- Classifier: transformers' text-classification pipeline behind a batchable API.
- Reranker: sentence-transformers' CrossEncoder, one query and its texts per request (the
  request shape of text-embeddings-inference's /rerank, which so1s serves too).
"""
import os

import bentoml
import numpy as np

MODEL_DIR = os.environ["SO1S_COMPARE_MODEL"]
THREADS = int(os.environ.get("SO1S_COMPARE_THREADS", "2"))


def threads():
    import torch

    torch.set_num_threads(THREADS)


@bentoml.service(workers=1, traffic={"timeout": 60})
class Embedder:
    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        threads()
        self.model = SentenceTransformer(MODEL_DIR, device="cpu")

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def predict(self, texts: list[str]) -> np.ndarray:
        # modules.json lists Normalize: the vectors come out at unit length, as so1s's do.
        return self.model.encode(texts, batch_size=32)


@bentoml.service(workers=1, traffic={"timeout": 60})
class Classifier:
    def __init__(self) -> None:
        from transformers import pipeline

        threads()
        self.pipe = pipeline("text-classification", model=MODEL_DIR, device="cpu")

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def predict(self, texts: list[str]) -> list[dict]:
        return self.pipe(texts, batch_size=32, truncation=True)


@bentoml.service(workers=1, traffic={"timeout": 60})
class Reranker:
    def __init__(self) -> None:
        from sentence_transformers import CrossEncoder

        threads()
        self.model = CrossEncoder(MODEL_DIR, device="cpu")

    @bentoml.api
    def rerank(self, query: str, texts: list[str]) -> list[dict]:
        # A one-label cross-encoder's score is the sigmoid of its logit, as so1s answers.
        scores = self.model.predict([(query, t) for t in texts], batch_size=32)
        order = np.argsort(-scores)
        return [{"index": int(i), "score": float(scores[i])} for i in order]
