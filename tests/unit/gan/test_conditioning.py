"""Class conditioning is an argument of every model kind: G's output depends on the class, D's logit on
the label through the projection term, and an unconditional network is the one it always was."""
import pytest
import torch

from pipeline.gan.conditioning import set_class_strength
from pipeline.gan.ema import EMA
from pipeline.gan.models import build_models

torch.set_num_threads(1)
KINDS = {
    "dcgan": {},
    "resnet": {},
    "r3gan": {"widths": (16, 16, 8, 8)},
}


def _pair(kind: str, num_classes: int):
    torch.manual_seed(0)
    return build_models(kind=kind, z_dim=8, g_width=4, d_width=4, resolution=32, g_norm="none", d_dropout=0.0,
                        num_classes=num_classes, **KINDS[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_generator_output_depends_on_the_class(kind):
    G, _ = _pair(kind, 5)
    G.eval()
    z = torch.randn(4, 8).repeat(2, 1)
    labels = torch.tensor([0, 1, 2, 3, 1, 2, 0, 3])  # the same z twice: three classes changed, one kept
    with torch.no_grad():
        out = G(z, labels)
    assert out.shape == (8, 3, 32, 32)
    assert (out[:4] - out[4:]).abs().amax(dim=(1, 2, 3))[:3].min() > 1e-4, "other class, same z: other image"
    assert torch.allclose(out[3], out[7]), "same class, same z: same image"


@pytest.mark.parametrize("kind", KINDS)
def test_projection_head_depends_on_the_label(kind):
    _, D = _pair(kind, 5)
    x = torch.randn(1, 3, 32, 32).repeat(5, 1, 1, 1)
    logits = D(x, torch.arange(5))
    assert logits.shape == (5, 1) and logits.std() > 1e-4
    # The term added is exactly ⟨embed(y), φ(x)⟩: the logit minus the head's is linear in the embedding.
    with torch.no_grad():
        D.projection.embed.weight.zero_()
    assert torch.allclose(D(x, torch.arange(5)), D(x, torch.zeros(5, dtype=torch.long)))


@pytest.mark.parametrize("kind", KINDS)
def test_unconditional_networks_keep_their_parameters(kind):
    G0, D0 = _pair(kind, 0)
    G, D = _pair(kind, 5)
    plain = set(G0.state_dict()) | {f"D.{k}" for k in D0.state_dict()}
    extra = (set(G.state_dict()) | {f"D.{k}" for k in D.state_dict()}) - plain
    assert extra == {"class_input.embed.weight", "class_input.strength",
                     "D.projection.embed.weight", "D.projection.strength"}
    assert G0(torch.randn(2, 8)).shape == (2, 3, 32, 32)  # no labels needed


def test_conditional_networks_refuse_a_missing_label():
    G, D = _pair("r3gan", 5)
    with pytest.raises(ValueError, match="needs labels"):
        G(torch.randn(2, 8))
    with pytest.raises(ValueError, match="needs labels"):
        D(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("kind", KINDS)
def test_class_strength_zero_is_unconditional_and_one_is_the_full_model(kind):
    G, D = _pair(kind, 5)
    G.eval()
    z, x = torch.randn(1, 8).repeat(5, 1), torch.randn(1, 3, 32, 32).repeat(5, 1, 1, 1)
    labels, first = torch.arange(5), torch.zeros(5, dtype=torch.long)
    with torch.no_grad():
        full_g, full_d = G(z, labels), D(x, labels)
        set_class_strength(0.0, G, D)
        assert torch.allclose(G(z, labels), G(z, first)), "λ = 0: the class changes nothing in G"
        zero_d = D(x, labels)
        assert torch.allclose(zero_d, D(x, first)), "λ = 0: nor in D"
        set_class_strength(0.5, G, D)
        half_d = D(x, labels)
        set_class_strength(1.0, G, D)
        assert torch.equal(G(z, labels), full_g) and torch.equal(D(x, labels), full_d)
    # D's projection term is linear in λ: halfway between the λ = 0 logit and the full one.
    assert torch.allclose(half_d, (zero_d + full_d) / 2, atol=1e-6)
    assert (full_d - zero_d).abs().max() > 1e-4


def test_class_strength_travels_with_checkpoints_and_the_ema_copy():
    G, _ = _pair("r3gan", 5)
    ema = EMA(G, beta=0.9)
    set_class_strength(0.25, G)
    ema.update(G, step=0, batch_size=4)
    assert ema.module.class_input.strength.item() == 0.25, "the EMA generator samples with training's λ"
    G2, _ = _pair("r3gan", 5)
    G2.load_state_dict(G.state_dict())
    assert G2.class_input.strength.item() == 0.25


@pytest.mark.parametrize("kind", KINDS)
def test_the_class_embedding_starts_at_r3gans_scale_quieter_than_z(kind):
    G, _ = _pair(kind, 100)  # 100 classes × 8 dims: std 1/√100 = 0.1, where z's entries have 1
    std = G.class_input.embed.weight.std().item()
    assert 0.09 < std < 0.11, std
