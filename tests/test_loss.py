import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from stm.training.loss import InfoNCE


def manual(q, p, n, t, own):
    q, p, n = (F.normalize(x, dim=-1) for x in (q, p, n))
    neg = (q * n).sum(-1, keepdim=True) if own else q @ n.T
    logits = torch.cat([q @ p.T, neg], 1) / t
    return F.cross_entropy(logits, torch.arange(len(q)))


@pytest.mark.parametrize("mode", ["all", "own"])
def test_infonce_matches_the_formula(mode):
    torch.manual_seed(0)
    q, p, n = torch.randn(3, 6, 16).unbind(0)
    got = InfoNCE(0.05, mode)(q, p, n)
    torch.testing.assert_close(got, manual(q, p, n, 0.05, mode == "own"))


def test_modes_differ_and_in_batch_only_works():
    torch.manual_seed(1)
    q, p, n = torch.randn(3, 6, 16).unbind(0)
    assert not torch.isclose(InfoNCE(0.05, "all")(q, p, n), InfoNCE(0.05, "own")(q, p, n))
    logits = F.normalize(q, dim=-1) @ F.normalize(p, dim=-1).T / 0.05
    torch.testing.assert_close(InfoNCE(0.05)(q, p), F.cross_entropy(logits, torch.arange(6)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, q, p, n, mode, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    k = len(q) // world
    sl = slice(rank * k, (rank + 1) * k)
    qq, pp, nn_ = (x[sl].clone().requires_grad_(True) for x in (q, p, n))
    loss = InfoNCE(0.05, mode)(qq, pp, nn_)
    loss.backward()
    value = loss.detach().clone()
    torch.distributed.all_reduce(value)
    grads = [torch.zeros_like(qq.grad) for _ in range(world)]
    torch.distributed.all_gather(grads, qq.grad)
    if rank == 0:
        out.put((value.item() / world, torch.cat(grads).tolist()))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("mode", ["all", "own"])
def test_two_process_gathered_loss_equals_single_process_global_batch(mode):
    torch.manual_seed(2)
    q, p, n = torch.randn(3, 8, 16).unbind(0)
    qs = q.clone().requires_grad_(True)
    single = InfoNCE(0.05, mode)(qs, p, n)
    single.backward()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, q, p, n, mode, out))
             for r in range(2)]
    for pr in procs:
        pr.start()
    value, grads = out.get(timeout=120)
    for pr in procs:
        pr.join(60)
    assert abs(value - single.item()) < 1e-5
    # each process's loss is the mean over its own queries; the global loss is their mean, hence the 1/2
    torch.testing.assert_close(torch.tensor(grads) / 2, qs.grad, atol=1e-5, rtol=1e-4)

