"""Dense and hybrid text retrieval through sentence-transformers, on a tiny random model saved to disk.

Needs the `dense` extra (sentence-transformers); skipped, and reported as skipped, without it.
"""

import json

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from mmsearch_r1.config import load_config  # noqa: E402
from mmsearch_r1.tools import build_toolbox  # noqa: E402
from mmsearch_r1.tools.local_text import LocalTextSearch, SentenceTransformerEncoder, build_text_index  # noqa: E402

WORDS = "the capital of zorblax is quenta heron bird fish tin metal grey wading eats".split()
PAGES = [
    {"url": "http://w/zorblax", "title": "Zorblax", "text": "The capital of zorblax is quenta."},
    {"url": "http://w/tin", "title": "Tin", "text": "Tin is a grey metal."},
    {"url": "http://w/heron", "title": "Heron", "text": "The heron is a wading bird. The heron eats fish."},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    raw = tmp_path_factory.mktemp("bert")
    (raw / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    BertTokenizerFast(vocab_file=str(raw / "vocab.txt")).save_pretrained(raw)
    BertModel(BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(raw)
    out = tmp_path_factory.mktemp("sbert")
    SentenceTransformer(modules=[Transformer(str(raw)), Pooling(32, "mean")], device="cpu").save(str(out))
    return out


def test_sentence_transformer_dense_and_hybrid(model_dir, tmp_path):
    encoder = SentenceTransformerEncoder(model_dir)
    vectors = encoder.encode(["tin metal", "heron bird"])
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    index = build_text_index(PAGES, tmp_path / "idx", dense_model=model_dir)
    assert json.loads((index / "index.json").read_text())["dense_encoder"] == str(model_dir.resolve())
    # A page's own text is its nearest neighbour under any encoder, random weights included.
    dense = LocalTextSearch(index, retrieval="dense")  # reloads the encoder the index names
    assert dense.search("Heron\nThe heron is a wading bird. The heron eats fish.", k=1)[0].url == "http://w/heron"
    hybrid = LocalTextSearch(index, retrieval="hybrid", encoder=encoder).search("capital of zorblax", k=3)
    assert hybrid[0].url == "http://w/zorblax" and len(hybrid) == 3
    cfg = load_config(None, [f'tools.text.index_dir="{index}"', 'tools.text.retrieval="hybrid"', 'tools.cache.mode="off"']).tools
    assert build_toolbox(cfg, image=False).text.search("capital of zorblax", k=1)[0].url == "http://w/zorblax"
