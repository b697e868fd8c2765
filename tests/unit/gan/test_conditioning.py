"""Class conditioning is an argument of every model kind: G's output depends on the class, D's logit on
the label through the projection term, and an unconditional network is the one it always was."""
import pytest
import torch

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
    assert extra == {"class_input.embed.weight", "D.projection.embed.weight"}
    assert G0(torch.randn(2, 8)).shape == (2, 3, 32, 32)  # no labels needed


def test_conditional_networks_refuse_a_missing_label():
    G, D = _pair("r3gan", 5)
    with pytest.raises(ValueError, match="needs labels"):
        G(torch.randn(2, 8))
    with pytest.raises(ValueError, match="needs labels"):
        D(torch.randn(2, 3, 32, 32))
