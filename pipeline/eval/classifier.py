"""A small CNN trained on the shards' `cls` labels: the offline feature extractor.

Inception weights are not always at hand (offline machines, the digits quickstart), but labelled
shards are. A classifier trained on the real images learns features that separate what matters in
this data set, so the Fréchet distance in its penultimate layer is a real, if data-set-specific,
metric: comparable across runs on the same data (same cache key), never across data sets.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Images are resized to at most this before the CNN: it bounds the cost on CPU for any data
# resolution (digits are 32x32 already) and 32 px is plenty to recognise a class.
MAX_INPUT_SIZE = 32


class FeatureCNN(nn.Module):
    """conv-relu-pool x2, conv-relu, 4x4 pool → linear-relu (features) → linear (logits).

    Takes (N, 3, H, W) in [-1, 1]. The 4x4 pooling (not a global average) keeps coarse layout in
    the features: a generated digit with the right strokes in the wrong places should score badly.
    No BatchNorm: the same function in train and eval mode, and per-batch statistics would make a
    sample's features depend on its batch mates.
    """

    def __init__(self, num_classes: int, *, width: int = 32, feature_dim: int = 128, input_size: int = 32):
        super().__init__()
        self.input_size = input_size
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(4 * w * 16, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)
        # Features come out multiplied by this fixed scalar, set once after training so that real
        # features have mean squared entry 1. Raw ReLU features have an arbitrary scale, and KID's
        # kernel (x·y/d + 1)³ needs x·y/d = O(1), as it is for Inception features: at scale ~10
        # the cubic blows every kernel value up and KID's noise with it.
        self.register_buffer("feature_scale", torch.ones(()))
        # Filled by train_classifier / from_checkpoint: held-out accuracy, label values, sizes.
        self.report: dict = {}

    def _prepare(self, x: Tensor) -> Tensor:
        # Generators overshoot [-1, 1]; real images never do. Clamp so both see the same range.
        x = x.float().clamp(-1, 1)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return x

    def features(self, x: Tensor) -> Tensor:
        return self.embed(self.body(self._prepare(x))) * self.feature_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def classify_features(self, feats: Tensor) -> Tensor:
        """Label values (as in the shards) predicted from `features()` output. The head was trained
        before `feature_scale` was set, so it reads the unscaled features."""
        dev = self.head.weight.device
        index = self.head(feats.to(dev) / self.feature_scale).argmax(1).cpu()
        return torch.tensor(self.report["classes"], dtype=torch.int64)[index]


def train_classifier(images: Tensor, labels: Tensor, *, steps: int, width: int, seed: int,
                     batch_size: int = 64, lr: float = 2e-3, holdout_fraction: float = 0.1) -> FeatureCNN:
    """Train on all but a held-out slice; `model.report["heldout_accuracy"]` says how well it learned.

    Deterministic for a seed on a given machine and thread count: the weights are initialised
    inside fork_rng (the caller's global RNG is untouched) and batches come from a seeded generator.
    """
    if images.ndim != 4 or images.shape[1] != 3 or len(images) != len(labels):
        raise ValueError(f"need images (N, 3, H, W) and labels (N,), got {tuple(images.shape)}, {tuple(labels.shape)}")
    images = images.detach().float().cpu()
    # Labels may be any integers (e.g. {3, 7}): train on their rank among the distinct values.
    classes, y = torch.unique(labels.detach().cpu().long(), sorted=True, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("the classifier extractor needs at least 2 distinct `cls` labels")

    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(images), generator=gen)
    n_hold = int(len(images) * holdout_fraction)
    hold, train = perm[:n_hold], perm[n_hold:]

    input_size = min(MAX_INPUT_SIZE, images.shape[-1], images.shape[-2])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureCNN(len(classes), width=width, input_size=input_size)
    # Resize once up front, not every step (the model's own resize is then a no-op).
    x_all = model._prepare(images)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    # enable_grad: the first evaluation may train the extractor from inside a caller's no_grad block.
    with torch.enable_grad():
        for _ in range(steps):
            idx = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=gen)]
            loss = F.cross_entropy(model(x_all[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()

    def accuracy(idx: Tensor) -> float | None:
        if len(idx) == 0:
            return None
        logits = torch.cat([model(x_all[c]) for c in idx.split(512)])
        return float((logits.argmax(1) == y[idx]).float().mean())

    with torch.no_grad():
        f = torch.cat([model.features(x_all[c]) for c in train[:2000].split(512)])
        model.feature_scale.fill_(1.0 / f.pow(2).mean().sqrt().clamp_min(1e-12))
        model.report = {
            "heldout_accuracy": accuracy(hold),
            "train_accuracy": accuracy(train[:2000]),  # a sample is enough to spot non-convergence
            "num_heldout": int(n_hold),
            "classes": [int(c) for c in classes],
            "steps": steps,
        }
    return model


@torch.no_grad()
def features(model: FeatureCNN, images: Tensor, *, batch_size: int = 500) -> Tensor:
    """Penultimate-layer features (N, feature_dim), float32 on CPU."""
    model.eval()
    device = next(model.parameters()).device
    out = [model.features(chunk.to(device)).float().cpu() for chunk in images.split(batch_size)]
    return torch.cat(out) if out else torch.empty(0, model.head.in_features)


def to_checkpoint(model: FeatureCNN) -> dict:
    """Plain tensors + a JSON string: loadable with torch.load(weights_only=True), no pickled code."""
    config = {
        "num_classes": model.head.out_features,
        "width": model.body[0].out_channels,
        "feature_dim": model.head.in_features,
        "input_size": model.input_size,
        "report": model.report,
    }
    return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": json.dumps(config)}


def from_checkpoint(ckpt: dict) -> FeatureCNN:
    config = json.loads(ckpt["config"])
    model = FeatureCNN(config["num_classes"], width=config["width"],
                       feature_dim=config["feature_dim"], input_size=config["input_size"])
    model.load_state_dict(ckpt["state_dict"])
    model.report = config["report"]
    return model.eval()
