"""The BentoML side of the comparison: all-MiniLM-L6-v2 through sentence-transformers, as a
BentoML 1.4 service with a batchable API (adaptive batching), the way BentoML's own
sentence-embedding example serves it. SO1S_COMPARE_MODEL names the model directory;
SO1S_COMPARE_THREADS the torch intra-op threads."""
import os

import bentoml
import numpy as np

MODEL_DIR = os.environ["SO1S_COMPARE_MODEL"]
THREADS = int(os.environ.get("SO1S_COMPARE_THREADS", "2"))


@bentoml.service(workers=1, traffic={"timeout": 60})
class Embedder:
    def __init__(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        self.model = SentenceTransformer(MODEL_DIR, device="cpu")

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def predict(self, texts: list[str]) -> np.ndarray:
        # modules.json lists Normalize: the vectors come out at unit length, as so1s's do.
        return self.model.encode(texts, batch_size=32)
