"""The CLIP/SigLIP embedder through transformers, on tiny randomly initialised models saved to disk."""

import json

import numpy as np
import pytest
from PIL import Image

from mmsearch_r1.errors import DataError
from mmsearch_r1.tools.embedders import ClipEmbedder
from mmsearch_r1.tools.local_image import LocalImageSearch, build_image_index

TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99, bos_token_id=0, eos_token_id=1, pad_token_id=1)


def save_clip(folder):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=TEXT, vision_config=TOWER, projection_dim=16)).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_siglip(folder):
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    torch.manual_seed(0)
    SiglipModel(SiglipConfig(text_config=TEXT, vision_config=TOWER)).save_pretrained(folder)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def pictures():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(6)]


@pytest.mark.parametrize("save, dim", [(save_clip, 16), (save_siglip, 32)])
def test_tiny_model_embeds_and_indexes(tmp_path, save, dim):
    folder = save(tmp_path / "model")
    embedder = ClipEmbedder(folder)
    images = pictures()
    vectors = embedder.embed(images)
    assert vectors.shape == (6, dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(embedder.embed(images[:2]), vectors[:2], atol=1e-5)  # batch-independent
    index = build_image_index([(im, f"picture {i}", f"http://p/{i}") for i, im in enumerate(images)], tmp_path / "idx", embedder)
    assert json.loads((index / "index.json").read_text())["embedder"]["type"] == "clip"
    search = LocalImageSearch(index)  # rebuilds the same embedder from the index's spec
    hits = search.search(images[4], k=3)
    assert hits[0].title == "picture 4" and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_missing_model_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a model folder"):
        ClipEmbedder(tmp_path)
