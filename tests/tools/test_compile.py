"""``train.compile=True`` (tools/train_net.py) trains like eager: equal losses step by step."""
import copy
import os

import pytest
import torch

pytest.importorskip("detectron2")
from detectron2.config import LazyConfig, instantiate  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train_net():
    from d2geo.engine import train_loop

    return train_loop


def _steps(model, batches):
    optim = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    model.train()
    for batch in batches:
        loss = sum(model(batch).values())
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_compiled_backbone_trains_with_the_eager_losses():
    cfg = LazyConfig.load(os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py"))
    cfg = LazyConfig.apply_overrides(cfg, ["model.backbone.net.encoder_kwargs.depth=2",
                                           "model.backbone.net.encoder_kwargs.embed_dim=48",
                                           "train.compile=True"])
    torch.manual_seed(0)
    eager = instantiate(cfg.model)
    compiled = copy.deepcopy(eager)
    _train_net().maybe_compile(compiled, cfg)
    assert compiled.backbone._compiled_call_impl is not None
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged
    g = torch.Generator().manual_seed(1)
    batches = [[{"image": torch.rand(6, 64, 64, generator=g) * 0.3,
                 "sem_seg": torch.randint(0, 4, (64, 64), generator=g)} for _ in range(2)]
               for _ in range(3)]
    ref = _steps(eager, batches)
    ours = _steps(compiled, batches)
    assert ours == pytest.approx(ref, rel=1e-4)
    assert ref[0] != pytest.approx(ref[-1], rel=1e-3)  # training moved the model
