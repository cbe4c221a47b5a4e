"""Your own two-encoder model and plain training loop, balanced with OGM-GE or OPM.

The model and loop below are ordinary PyTorch. The lines marked ``# modbalance`` are all it
takes: four for OGM-GE, five for OPM. Run::

    python examples/plug_in.py --method joint
    python examples/plug_in.py --method ogm_ge
    python examples/plug_in.py --method opm

The data is a toy problem where audio is easy and visual is hard, so joint training leaves
the visual encoder behind; the script prints each modality's own accuracy at the end.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from modbalance import OGM, OPM, kept_cross_entropy, unimodal_scores  # modbalance
from modbalance.scores import head_slice


class AudioVisualNet(nn.Module):
    """A user's model: two encoders and a linear head on concatenated features."""

    def __init__(self, num_classes: int = 4, width: int = 32) -> None:
        super().__init__()
        self.audio = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width))
        self.visual = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = {"audio": self.audio(audio), "visual": self.visual(visual)}
        return self.head(torch.cat([features["audio"], features["visual"]], dim=1)), features


def toy_batch(generator: torch.Generator, batch: int = 64, num_classes: int = 4) -> tuple[torch.Tensor, ...]:
    """Audio: a strong class signal in clear view. Visual: a weak one."""
    y = torch.randint(0, num_classes, (batch,), generator=generator)
    signal = F.one_hot(y, 16).float()
    audio = 3.0 * signal + torch.randn(batch, 16, generator=generator)
    visual = 0.8 * signal + torch.randn(batch, 16, generator=generator)
    return audio, visual, y


def train(method: str, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """Train with ``method`` in {"joint", "ogm_ge", "opm"}; return each modality's own accuracy."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    model = AudioVisualNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ogm = OGM({"audio": model.audio, "visual": model.visual}, alpha=0.8, noise=True)  # modbalance
    opm = OPM(q_base=0.5, lam=0.5, p_exe=0.7)  # modbalance

    for _ in range(steps):
        audio, visual, y = toy_batch(data)
        if method == "opm":
            features = {"audio": model.audio(audio), "visual": model.visual(visual)}
            scores = unimodal_scores(head_slice(model.head, features), y)  # modbalance
            dropped = opm(features, scores)  # modbalance
            logits = model.head(torch.cat([dropped.features["audio"], dropped.features["visual"]], dim=1))
            loss = kept_cross_entropy(logits, y, dropped.keep)  # modbalance
        else:
            logits, features = model(audio, visual)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        if method == "ogm_ge":
            ogm.modulate(head_slice(model.head, features), y)  # modbalance
        optimizer.step()

    model.eval()
    with torch.no_grad():
        audio, visual, y = toy_batch(torch.Generator().manual_seed(10_000 + seed), batch=4000)
        logits, features = model(audio, visual)
        per_modality = head_slice(model.head, features)
    accuracy = {name: (z.argmax(1) == y).float().mean().item() for name, z in per_modality.items()}
    accuracy["fused"] = (logits.argmax(1) == y).float().mean().item()
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["joint", "ogm_ge", "opm"], default="ogm_ge")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    accuracy = train(args.method, args.steps)
    print(", ".join(f"{name} {value:.3f}" for name, value in accuracy.items()))


if __name__ == "__main__":
    main()
