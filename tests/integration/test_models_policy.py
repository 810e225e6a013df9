"""The tiny Qwen2.5-VL: builds offline, generates with images, saves and loads back; real-layout folders load too."""

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from mmsearch_r1.errors import ConfigError  # noqa: E402
from mmsearch_r1.models import ModelConfig, build_tiny_policy, build_tokenizer, load_policy  # noqa: E402
from mmsearch_r1.models.policy import _mrope_section, require_device  # noqa: E402


@pytest.fixture(scope="module")
def policy():
    tokenizer = build_tokenizer(["A red bird called Zorblat. A blue tower called Quixo."] * 20, vocab_size=400)
    return build_tiny_policy(ModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128), tokenizer, seed=1)


def _inputs(policy, n_images=1, size=(70, 64)):
    parts = [{"type": "image"}] * n_images + [{"type": "text", "text": "What colour is it?"}]
    text = policy.processor.apply_chat_template([{"role": "user", "content": parts}], add_generation_prompt=True, tokenize=False)
    images = [Image.new("RGB", size, c) for c in ("red", "blue", "green")[:n_images]]
    return policy.processor(text=[text], images=images, return_tensors="pt")


def test_mrope_section_splits_half_head_dim():
    for head_dim in (16, 32, 64, 128):
        section = _mrope_section(head_dim)
        assert sum(section) == head_dim // 2 and len(section) == 3


def test_images_become_few_visual_tokens(policy):
    inputs = _inputs(policy, n_images=2)
    image_id = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # 56x56 pixels, 14-pixel patches, 2x2 merge: 4 visual tokens per image, whatever the input size
    assert int((inputs["input_ids"] == image_id).sum()) == 8
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]


def test_generates_with_images_and_is_seeded(policy):
    inputs = _inputs(policy)
    torch.manual_seed(0)
    first = policy.model.generate(**inputs, max_new_tokens=6, do_sample=True)
    torch.manual_seed(0)
    second = policy.model.generate(**inputs, max_new_tokens=6, do_sample=True)
    assert first.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(first, second)
    emb = policy.model.get_input_embeddings().weight
    assert float(emb.detach().std()) < 0.05  # small-std init


def test_save_and_load_round_trip(policy, tmp_path):
    policy.save(tmp_path / "tiny")
    loaded = load_policy(tmp_path / "tiny")
    inputs = _inputs(policy)
    with torch.no_grad():
        expected = policy.model(**inputs).logits
        got = loaded.model(**_inputs(loaded)).logits
    assert torch.allclose(expected, got, atol=1e-6)
    assert loaded.tokenizer.chat_template == policy.tokenizer.chat_template
    assert loaded.image_processor.size == policy.image_processor.size
    assert loaded.eos_token_id == policy.eos_token_id


def test_loads_a_checkpoint_in_real_qwen_layout(policy, tmp_path):
    """A folder laid out like a downloaded Qwen2.5-VL: its own preprocessor settings and chat_template.json."""
    folder = tmp_path / "qwen"
    policy.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for p in m['content'] %}{% if p['type'] == 'image' %}Picture: <|vision_start|><|image_pad|><|vision_end|>{% else %}{{ p['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    settings = {
        "min_pixels": 3136, "max_pixels": 28 * 28 * 16, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    loaded = load_policy(folder)
    assert "Picture: " in loaded.processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)
    # its own pixel budget: a 112x112 image is 8x8 patches -> 16 visual tokens (the tiny default gives 4)
    inputs = _inputs(loaded, size=(112, 112))
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
    with torch.no_grad():
        assert loaded.model(**inputs).logits.shape[-1] == policy.model.config.text_config.vocab_size


def test_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        load_policy(tmp_path / "nowhere")


def test_a_device_torch_cannot_use_is_one_sentence_naming_the_setting(policy, tmp_path):
    for device in ("gpu", "cuda:x", "cuda1", "mps"):
        with pytest.raises(ConfigError, match=rf"^engine.device is `{device}`; use cpu, cuda or cuda:<index>.$"):
            require_device(device, "engine.device")
    assert require_device("cpu", "engine.device") == "cpu"
    if torch.version.cuda is None:
        with pytest.raises(ConfigError, match=r"^train.device is `cuda:0`, but torch .* is a CPU-only build; set train.device=cpu, or install"):
            require_device("cuda:0", "train.device")
    elif torch.cuda.is_available():
        count = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"this machine has {count} CUDA GPU"):
            require_device(f"cuda:{count}", "train.device")
    policy.save(tmp_path / "p")
    with pytest.raises(ConfigError, match="the policy's device is `gpu`"):
        load_policy(tmp_path / "p", device="gpu")


def test_the_head_on_loss_positions_alone_gives_the_same_loss_and_gradients(policy):
    """``pretrain.head_on_loss_only`` is a faster way to the same loss: a batch of two chats (one with an image,
    one padded) with the loss on a few positions, one of them weighted 2, gives the full head's loss and
    gradients up to rounding."""
    from mmsearch_r1.models.encode import Encoded
    from mmsearch_r1.models.pretrain import collate, lm_loss, masked_lm_loss

    inputs = _inputs(policy)
    ids = inputs["input_ids"][0].tolist()
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"][0]
    with_image = Encoded("a", ids, [0] * (len(ids) - 3) + [1, 2, 1], [pixels], [grid])
    text_only = Encoded("b", ids[-6:], [0, 0, 1, 1, 0, 0], [], [])
    image_id = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    batch = collate([with_image, text_only], policy.tokenizer.pad_token_id, image_id)
    results = []
    for head_on_loss_only in (False, True):
        policy.model.zero_grad()
        loss = lm_loss(policy.model, batch, head_on_loss_only=head_on_loss_only)
        loss.backward()
        results.append((float(loss.detach()), {n: w.grad.clone() for n, w in policy.model.named_parameters() if w.grad is not None}))
    policy.model.zero_grad()
    (full, full_grads), (head, head_grads) = results
    plain = masked_lm_loss(policy.model(**batch["inputs"]).logits, batch["inputs"]["input_ids"], batch["loss_mask"])
    assert full == float(plain.detach()) and full > 1.0 and head == pytest.approx(full, rel=1e-5)
    assert full_grads.keys() == head_grads.keys() and any("visual" in n for n in full_grads)
    for name, grad in full_grads.items():
        torch.testing.assert_close(head_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    nothing = collate([Encoded("c", ids[-6:], [0] * 6, [], [])], policy.tokenizer.pad_token_id, image_id)
    assert float(lm_loss(policy.model, nothing, head_on_loss_only=True).detach()) == 0.0  # as masked_lm_loss: no targets, no loss


def test_a_model_not_split_into_body_and_head_runs_its_whole_forward_for_the_loss(policy):
    """``head_on_loss_only`` runs the body and the head apart only where the forward is nothing more (as
    ``engines.hf.body_and_head`` decides): a model that changes its logits after the head keeps that change."""
    from mmsearch_r1.models.encode import Encoded
    from mmsearch_r1.models.pretrain import collate, lm_loss

    class Scaled(torch.nn.Module):  # its forward halves the logits; its body is not its own
        def __init__(self, model):
            super().__init__()
            self.model, self.config = model, model.config

        def get_output_embeddings(self):
            return self.model.get_output_embeddings()

        def forward(self, **inputs):
            out = self.model(**inputs)
            out.logits = out.logits / 2
            return out

    ids = _inputs(policy)["input_ids"][0].tolist()[-6:]
    batch = collate([Encoded("a", ids, [0, 0, 1, 1, 1, 0], [], [])], policy.tokenizer.pad_token_id, 0)
    with torch.no_grad():
        scaled = lm_loss(Scaled(policy.model), batch, head_on_loss_only=True)
        assert float(scaled) != pytest.approx(float(lm_loss(policy.model, batch, head_on_loss_only=True)), rel=1e-3)
        assert float(scaled) == float(lm_loss(Scaled(policy.model), batch, head_on_loss_only=False))
