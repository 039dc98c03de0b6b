"""The margin losses the attention embedders fine-tune with: the margin lands on the true class only, ArcFace's
target logit is cos(theta + m) and stays decreasing in theta, and training a head separates real classes."""

from __future__ import annotations

import itertools
import math

import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)

from training.losses import MarginHead  # noqa: E402


def head_with_centres(kind: str, s: float, m: float) -> MarginHead:
    head = MarginHead(2, 2, kind, s, m)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    return head


def at_angle(theta: float) -> torch.Tensor:
    return torch.tensor([[math.cos(theta), math.sin(theta)]])


def test_am_softmax_subtracts_m_from_the_true_class_only() -> None:
    head = head_with_centres("am-softmax", 30.0, 0.4)
    logits = head.logits(at_angle(0.3), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(30 * (math.cos(0.3) - 0.4), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(30 * math.cos(math.pi / 2 - 0.3), abs=1e-4)


def test_arcface_adds_m_to_the_angle_and_stays_decreasing() -> None:
    head = head_with_centres("arcface", 64.0, 0.5)
    logits = head.logits(at_angle(0.7), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(0.7 + 0.5), abs=1e-3)
    assert logits[0, 1].item() == pytest.approx(64 * math.cos(math.pi / 2 - 0.7), abs=1e-3)
    # past theta = pi - m the logit keeps falling with theta instead of rising again
    thetas = [i * math.pi / 200 for i in range(201)]
    targets = [head.logits(at_angle(t), torch.tensor([0]))[0, 0].item() for t in thetas]
    assert all(b <= a + 1e-4 for a, b in itertools.pairwise(targets))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        MarginHead(8, 3, "sphereface")


@pytest.mark.parametrize(("kind", "s", "m"), [("arcface", 32.0, 0.5), ("am-softmax", 30.0, 0.4)])
def test_a_head_learns_to_separate_classes(kind: str, s: float, m: float) -> None:
    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    labels = torch.arange(5).repeat_interleave(40)
    x = centres[labels] + 0.3 * torch.randn(200, 16)
    head = MarginHead(16, 5, kind, s, m)
    optimiser = torch.optim.SGD(head.parameters(), lr=0.1)
    first = head(x, labels).item()
    for _ in range(100):
        optimiser.zero_grad()
        loss = head(x, labels)
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.5 * first
    with torch.no_grad():
        plain = torch.nn.functional.linear(torch.nn.functional.normalize(x, dim=1),
                                           torch.nn.functional.normalize(head.weight, dim=1))
    assert (plain.argmax(1) == labels).float().mean().item() > 0.95
