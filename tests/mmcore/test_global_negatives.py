"""Global negatives under torchrun: on 2 gloo processes, each holding half a batch, the contrastive loss and the
gradients DDP averages equal one process's on the whole batch (to 1e-5), and each rank's loss and gradients
equal OpenCLIP's ClipLoss(local_loss=True, gather_with_grad=True) on the same inputs (tests/reference)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from mmcore.losses import contrastive_loss

ROOT = Path(__file__).resolve().parents[2]
BATCH, WORLD = 12, 2

# One rank: half of the batch (every WORLD-th pair, as distributed.shard deals them), the loss, backward, the
# gradients averaged over ranks as DDP averages them; then the same with OpenCLIP's loss.
RANK_SCRIPT = """
import sys, torch, torch.distributed as dist
from mmcore.losses import contrastive_loss
from mmcore.training import distributed
from tests.mmcore.test_global_negatives import model_and_batch, grads
from tests.reference.open_clip_loss import ClipLoss

distributed.init_from_env()
rank, world = dist.get_rank(), dist.get_world_size()
out = {}
for name in ("ours", "open_clip"):
    model, images, texts = model_and_batch()
    img, txt, scale = model(images[rank::world], texts[rank::world])
    loss = (contrastive_loss(img, txt, scale)["loss"] if name == "ours" else
            ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)(img, txt, scale))
    loss.backward()
    for p in model.parameters():  # what DistributedDataParallel does with the gradients
        dist.all_reduce(p.grad)
        p.grad /= world
    out[name] = {"loss": loss.detach(), "grads": grads(model)}
torch.save(out, f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
"""


class Pair(torch.nn.Module):
    """Two projections into one normalised space and a learned scale: the parts of a dual encoder the loss sees."""

    def __init__(self) -> None:
        super().__init__()
        self.image, self.text = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)
        self.log_scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, images: torch.Tensor, texts: torch.Tensor):
        norm = torch.nn.functional.normalize
        return norm(self.image(images), dim=-1), norm(self.text(texts), dim=-1), self.log_scale.exp()


def model_and_batch() -> tuple[Pair, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = Pair().double()
    gen = torch.Generator().manual_seed(1)
    return model, torch.randn(BATCH, 6, generator=gen).double(), torch.randn(BATCH, 5, generator=gen).double()


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_optimise_the_loss_of_one_on_the_whole_batch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(tmp_path)], cwd=ROOT,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(WORLD)]
    try:
        logs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * WORLD, logs
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    model, images, texts = model_and_batch()  # one process, the whole batch
    whole = contrastive_loss(*model(images, texts))["loss"]
    whole.backward()
    single = grads(model)

    mean_loss = sum(r["ours"]["loss"] for r in ranks) / WORLD
    assert torch.allclose(mean_loss, whole.detach(), atol=1e-5)
    for r in ranks:
        assert r["ours"]["grads"].keys() == single.keys()
        for name, grad in single.items():
            assert torch.allclose(r["ours"]["grads"][name], grad, atol=1e-5), name
            assert torch.allclose(r["ours"]["grads"][name], r["open_clip"]["grads"][name], atol=1e-10), name
        assert torch.allclose(r["ours"]["loss"], r["open_clip"]["loss"], atol=1e-10)
    # the negatives are global: a rank's loss is not the loss of its own half alone
    own = contrastive_loss(*model(images[0::WORLD], texts[0::WORLD]))["loss"].detach()
    assert not torch.allclose(ranks[0]["ours"]["loss"], own, atol=1e-3)
