"""Makes the classifier and the reranker the comparison serves, in the shapes of the hub's
most used ones, with random weights (no model hub here; speed does not depend on the
weights' values, and both servers answer from the same files):

- bench-distilbert-sst2: distilbert-base-uncased-finetuned-sst-2-english's shape (6 layers,
  768 wide, labels NEGATIVE/POSITIVE);
- bench-minilm-reranker: cross-encoder/ms-marco-MiniLM-L-6-v2's shape (a one-label BERT,
  6 layers, 384 wide).

Both use the uncased WordPiece vocabulary they ship with (bert-base-uncased's, the one
all-MiniLM-L6-v2 also ships), saved as transformers saves them (config.json,
model.safetensors, tokenizer.json and the older tokenizer files).

  python make_models.py MINILM_DIR OUT_DIR
"""
import os
import sys

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertTokenizerFast,
)

minilm, out = sys.argv[1], sys.argv[2]
vocab = os.path.join(minilm, "vocab.txt")
torch.manual_seed(0)

target = os.path.join(out, "bench-distilbert-sst2")
if not os.path.exists(os.path.join(target, "config.json")):
    config = DistilBertConfig(
        vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    DistilBertForSequenceClassification(config).eval().save_pretrained(target)
    DistilBertTokenizerFast(vocab, do_lower_case=True, model_max_length=512).save_pretrained(target)

target = os.path.join(out, "bench-minilm-reranker")
if not os.path.exists(os.path.join(target, "config.json")):
    config = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=1536, max_position_embeddings=512, num_labels=1,
        id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0},
    )
    BertForSequenceClassification(config).eval().save_pretrained(target)
    BertTokenizerFast(vocab, do_lower_case=True, model_max_length=512).save_pretrained(target)
print(out)
