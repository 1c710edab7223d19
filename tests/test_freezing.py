import pytest
import torch
from transformers import HubertConfig, HubertForCTC

from s2t_hf.models.freezing import apply_freezing, count_layers
from s2t_hf.models.mel_conformer import MelConformerConfig, MelConformerForCTC

from .families import TINY_ENCODER


def tiny_hubert() -> HubertForCTC:
    return HubertForCTC(HubertConfig(**{**TINY_ENCODER, "num_hidden_layers": 4}, vocab_size=29))


def expected_trainable(model, layers: list[int]) -> int:
    prefix = [f"hubert.encoder.layers.{index}." for index in layers] + ["lm_head."]
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith(tuple(prefix)))


@pytest.mark.parametrize("trainable_layers, layers", [(0, []), (1, [3]), (2, [2, 3]), (4, [0, 1, 2, 3])])
def test_last_n_layers_and_head_stay_trainable(trainable_layers, layers):
    model = tiny_hubert()
    trainable, total = apply_freezing(model, trainable_layers)
    assert count_layers(model) == 4
    assert trainable == expected_trainable(model, layers)
    assert total == sum(p.numel() for p in model.parameters())
    assert all(p.requires_grad for p in model.lm_head.parameters())
    assert not any(p.requires_grad for p in model.hubert.feature_extractor.parameters())


def test_head_only_and_named_extras():
    model = tiny_hubert()
    assert apply_freezing(model, train_only_head=True)[0] == sum(p.numel() for p in model.lm_head.parameters())
    trainable, _ = apply_freezing(model, 0, also_trainable=[r"encoder\.layer_norm"])
    assert trainable == sum(p.numel() for p in model.lm_head.parameters()) + sum(p.numel() for p in model.hubert.encoder.layer_norm.parameters())


def test_unset_leaves_the_model_alone():
    model = tiny_hubert()
    assert apply_freezing(model, None)[0] == sum(p.numel() for p in model.parameters())


def test_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="between 0 and the model's 4 layers"):
        apply_freezing(tiny_hubert(), 5)


def test_frozen_parameters_do_not_move_in_a_training_step():
    torch.manual_seed(0)
    model = MelConformerForCTC(MelConformerConfig(vocab_size=29, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64))
    apply_freezing(model, 1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.randn(2, 8000), labels=torch.tensor([[5, 6], [7, 8]])).loss.backward()
    optimizer.step()
    for name, parameter in model.named_parameters():
        moved = not torch.equal(parameter, before[name])
        assert moved == parameter.requires_grad or (parameter.requires_grad and parameter.grad is not None and parameter.grad.abs().sum() == 0), name
    assert not torch.equal(model.layers[2].feed_forward_in.up.weight, before["layers.2.feed_forward_in.up.weight"])
    assert torch.equal(model.layers[0].feed_forward_in.up.weight, before["layers.0.feed_forward_in.up.weight"])


def tiny_whisper_model():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(d_model=32, encoder_layers=4, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=60, num_mel_bins=80, max_source_positions=50,
                           max_target_positions=20, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
    return WhisperForConditionalGeneration(config)


@pytest.mark.parametrize("first_layers", [None, 0, 2, 4])
def test_freeze_encoder_keeps_its_front_end_and_first_layers(first_layers):
    from s2t_hf.models.freezing import freeze_encoder

    model = tiny_whisper_model()
    trainable, total = freeze_encoder(model, first_layers)
    encoder = model.get_encoder()
    learning = {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("layers.") else "")
                for name, parameter in encoder.named_parameters() if parameter.requires_grad}
    if first_layers is None:
        assert learning == set()
    else:
        assert learning == {f"layers.{index}" for index in range(first_layers, 4)} | {"layer_norm"}
    assert all(parameter.requires_grad for parameter in model.get_decoder().parameters())
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == sum(p.numel() for p in model.parameters())


def test_freeze_encoder_refuses_more_layers_than_it_has():
    from s2t_hf.models.freezing import freeze_encoder

    with pytest.raises(ValueError, match="freeze_encoder_layers=5 must be between 0 and the encoder's 4 layers"):
        freeze_encoder(tiny_whisper_model(), 5)
