import torch
from transformers import AutoModelForCTC

from s2t_hf.models.mel_conformer import MelConformerConfig, MelConformerForCTC

TINY = dict(vocab_size=29, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_kernel_size=5)


def test_output_lengths_match_the_frames_produced():
    model = MelConformerForCTC(MelConformerConfig(**TINY)).eval()
    samples = torch.tensor([16000, 9000, 1600])
    mask = (torch.arange(16000) < samples[:, None]).long()
    logits = model(torch.randn(3, 16000) * mask, attention_mask=mask).logits
    lengths = model._get_feat_extract_output_lengths(samples)
    assert logits.shape == (3, int(lengths.max()), 29)
    assert lengths.tolist() == [26, 15, 3]


def test_padding_does_not_change_a_clip_s_output():
    torch.manual_seed(0)
    model = MelConformerForCTC(MelConformerConfig(**TINY)).eval()
    clip = torch.randn(1, 8000)
    alone = model(clip).logits
    padded = torch.cat([clip, torch.zeros(1, 8000)], dim=1)
    mask = torch.cat([torch.ones(1, 8000), torch.zeros(1, 8000)], dim=1).long()
    together = model(padded, attention_mask=mask).logits[:, : alone.shape[1]]
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_trains_on_very_short_clips_without_nan():
    torch.manual_seed(0)
    model = MelConformerForCTC(MelConformerConfig(**TINY)).train()
    audio = torch.randn(2, 1200)  # 75 ms: fewer frames than SpecAugment would mask in a long clip
    labels = torch.tensor([[5, 6, 7], [8, -100, -100]])
    loss = model(audio, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_saves_and_loads_through_the_auto_class(tmp_path):
    model = MelConformerForCTC(MelConformerConfig(**TINY)).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MelConformerForCTC)
    audio = torch.randn(1, 4000)
    torch.testing.assert_close(loaded(audio).logits, model(audio).logits)
    assert (tmp_path / "model.safetensors").is_file()


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    config = MelConformerConfig(**TINY, dropout=0.0, time_masks=0, freq_masks=0)
    model = MelConformerForCTC(config).train()
    audio, labels = torch.randn(2, 8000), torch.tensor([[5, 6], [7, 8]])
    model(audio, labels=labels).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(audio, labels=labels).loss.backward()
    for expected, parameter in zip(plain, model.parameters()):
        torch.testing.assert_close(parameter.grad, expected)
