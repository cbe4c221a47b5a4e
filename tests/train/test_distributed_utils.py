"""Distributed utilities: torchrun environment, sum reduction on two gloo ranks, the sharded sampler,
worker seeding and deterministic mode. (OGM/OPM under DDP are covered by tests/test_distributed.py.)"""

import os
import random
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

from modbalance.train.distributed import (
    DistributedContext,
    ShardedBatchSampler,
    broadcast_object,
    gather_objects,
    init_distributed,
    reduce_sums,
    seed_worker,
    set_deterministic,
    shutdown_distributed,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ------------------------------------------------------------------------------------------ environment
def test_without_torchrun_variables_there_is_one_process_and_no_group(clean_env):
    ctx = init_distributed("cpu")
    assert ctx == DistributedContext(0, 1, 0, torch.device("cpu"), True, False)
    assert not torch.distributed.is_initialized()
    values = {"n": torch.tensor(3)}
    assert reduce_sums(values, ctx)["n"] is values["n"]
    assert gather_objects({"a": 1}, ctx) == [{"a": 1}] and broadcast_object("x", ctx) == "x"
    shutdown_distributed(ctx)  # no-op
    if not torch.cuda.is_available():
        assert init_distributed("auto").device == torch.device("cpu")


@pytest.mark.parametrize(
    ("env", "device", "error", "message"),
    [
        ({"WORLD_SIZE": "2", "RANK": "0"}, "cpu", ValueError, "MASTER_ADDR and MASTER_PORT is not set"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "cpu", ValueError, "0 <= RANK < WORLD_SIZE, got RANK=2"),
        ({"WORLD_SIZE": "two"}, "cpu", ValueError, "WORLD_SIZE='two' must be an integer"),
        ({"LOCAL_RANK": "-1"}, "cpu", ValueError, "LOCAL_RANK must be >= 0"),
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "cuda:0", ValueError, "pins one GPU"),
        ({}, "tpu9", ValueError, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({}, 0, TypeError, "device must be a string"),
    ],
)
def test_bad_environment_or_device_is_refused(clean_env, env, device, error, message):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(error, match=message):
        init_distributed(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_cuda(clean_env):
    with pytest.raises(ValueError, match="CUDA is not available"):
        init_distributed("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        init_distributed("cuda:0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    # keys in a rank-dependent order: reduce_sums must not depend on it
    values = {
        "correct": torch.tensor(3 + rank),  # int64
        "loss_sum": torch.tensor(0.25 * (rank + 1), dtype=torch.float32),
        "per_class": torch.tensor([[rank, 1], [2, 10 * rank]], dtype=torch.int32),
        "big": torch.tensor(2**40 + rank, dtype=torch.int64),
    }
    if rank == 1:
        values = dict(reversed(list(values.items())))
    reduced = reduce_sums(values, ctx)
    gathered = gather_objects({"rank": rank}, ctx)
    name = broadcast_object(f"run-from-rank-{rank}", ctx)
    torch.save({"ctx": ctx, "reduced": reduced, "gathered": gathered, "name": name}, f"{out}/rank{rank}.pt")
    shutdown_distributed(ctx)


def test_two_gloo_ranks_reduce_sums_exactly_in_one_call(tmp_path):
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for rank, result in enumerate(results):
        ctx = result["ctx"]
        assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main, ctx.distributed) == (
            rank,
            2,
            rank,
            rank == 0,
            True,
        )
        reduced = result["reduced"]
        assert reduced["correct"].dtype == torch.int64 and int(reduced["correct"]) == 3 + 4
        assert reduced["loss_sum"].dtype == torch.float32 and float(reduced["loss_sum"]) == 0.25 + 0.5
        assert reduced["per_class"].dtype == torch.int32
        assert reduced["per_class"].tolist() == [[1, 2], [4, 10]]
        assert int(reduced["big"]) == 2**41 + 1  # exact beyond float32's integer range
        assert result["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert result["name"] == "run-from-rank-0"


def test_reduce_sums_rejects_non_tensors(clean_env):
    with pytest.raises(TypeError, match=r"values\['n'\] must be a Tensor, got int"):
        reduce_sums({"n": 3}, init_distributed("cpu"))  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------ sampler
def epoch_batches(n, b, w, *, shuffle=True, drop_last=False, seed=0, epoch=0):
    """Per-rank lists of batches for one epoch."""
    out = []
    for r in range(w):
        sampler = ShardedBatchSampler(n, b, seed=seed, shuffle=shuffle, drop_last=drop_last, rank=r, world_size=w)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def test_hand_computed_shards_including_the_last_partial_batches():
    # 7 samples, per-rank batch 2, 2 ranks: global batches [0..3] and [4, 5, 6]
    assert epoch_batches(7, 2, 2, shuffle=False) == [[[0, 1], [4, 5]], [[2, 3], [6]]]
    # 9 samples: the lone 9th sample cannot give both ranks one, so it joins the previous global batch
    assert epoch_batches(9, 2, 2, shuffle=False) == [[[0, 1], [4, 5, 6]], [[2, 3], [7, 8]]]
    # 3 ranks, last global batch of 5 split 2/2/1
    assert epoch_batches(11, 2, 3, shuffle=False) == [[[0, 1], [6, 7]], [[2, 3], [8, 9]], [[4, 5], [10]]]
    assert epoch_batches(11, 2, 3, shuffle=False, drop_last=True) == [[[0, 1]], [[2, 3]], [[4, 5]]]


@pytest.mark.parametrize(("n", "b", "w"), [(37, 4, 1), (37, 4, 2), (37, 3, 4), (40, 5, 2), (41, 5, 2), (10, 7, 3)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_sample_once_per_epoch_and_equal_step_counts(n, b, w, shuffle):
    per_rank = epoch_batches(n, b, w, shuffle=shuffle, seed=3, epoch=1)
    counts = {len(batches) for batches in per_rank}
    assert counts == {len(ShardedBatchSampler(n, b, seed=3, shuffle=shuffle, rank=0, world_size=w))}
    assert all(batch for batches in per_rank for batch in batches)  # no empty batch anywhere
    seen = sorted(i for batches in per_rank for batch in batches for i in batch)
    assert seen == list(range(n))


@pytest.mark.parametrize(("n", "b", "w"), [(37, 4, 2), (40, 5, 4), (64, 8, 2)])
def test_drop_last_keeps_only_full_global_batches(n, b, w):
    per_rank = epoch_batches(n, b, w, drop_last=True)
    assert all(len(batch) == b for batches in per_rank for batch in batches)
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert len(seen) == len(set(seen)) == (n // (b * w)) * b * w


@pytest.mark.parametrize("n", [40, 43, 45])
def test_two_ranks_see_the_single_process_global_batches(n):
    single = epoch_batches(n, 8, 1, seed=11, epoch=2)[0]
    rank0, rank1 = epoch_batches(n, 4, 2, seed=11, epoch=2)
    assert len(rank0) == len(single)
    for step, batch in enumerate(single):
        assert rank0[step] + rank1[step] == batch  # same samples, same order, same step


def test_permutation_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        sampler = ShardedBatchSampler(100, 10, seed=seed, shuffle=True)
        sampler.set_epoch(epoch)
        return sampler.order().tolist()

    torch.manual_seed(123)
    a = order(0, 1)
    torch.manual_seed(999)  # the global RNG plays no part
    random.seed(1)
    assert order(0, 1) == a
    assert sorted(a) == list(range(100))
    assert a != list(range(100))  # shuffled (identity has probability 1/100!)
    others = [order(0, 0), order(1, 1), order(1, 0), order(0, 2)]
    assert all(o != a for o in others)
    assert order(1, 0) != order(0, 1)  # (seed, epoch) is not just seed + epoch
    assert ShardedBatchSampler(10, 3, seed=0, shuffle=False).order().tolist() == list(range(10))


def test_set_start_batch_skips_once_and_len_is_the_full_epoch():
    sampler = ShardedBatchSampler(30, 4, seed=5, shuffle=True, rank=1, world_size=2)
    sampler.set_epoch(3)
    full = list(sampler)
    assert len(sampler) == len(full) == 4  # 30 samples / global 8 -> 3 full + 1 of 6
    sampler.set_start_batch(2)
    assert len(sampler) == 4
    assert list(sampler) == full[2:]
    assert list(sampler) == full  # reset after the epoch
    sampler.set_start_batch(4)
    assert list(sampler) == []
    assert [sampler.global_batch_size(i) for i in range(4)] == [8, 8, 8, 6]
    with pytest.raises(ValueError, match=r"start batch must be an int in \[0, 4\], got 5"):
        sampler.set_start_batch(5)
    with pytest.raises(IndexError, match="batch index 4 out of range"):
        sampler.global_batch_size(4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_samples": 0}, "num_samples must be an int >= 1"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"rank": 2}, r"rank must be an int in \[0, world_size=2\)"),
        ({"num_samples": 1}, "num_samples=1 is smaller than world_size=2"),
        ({"num_samples": 5, "drop_last": True}, "leaves no batch at all"),
        ({"seed": 1.5}, "seed must be an int"),
    ],
)
def test_sampler_argument_errors(kwargs, message):
    args = {
        "num_samples": 20,
        "batch_size": 3,
        "seed": 0,
        "shuffle": True,
        "rank": 0,
        "world_size": 2,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        ShardedBatchSampler(**args)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        ShardedBatchSampler(4, 2, seed=0, shuffle=True).set_epoch(-1)


# ------------------------------------------------------------------------------------------ determinism
def test_seed_worker_derives_python_and_numpy_seeds_from_torch():
    torch.manual_seed(2**33 + 17)  # torch seeds are 64-bit; Python/NumPy get it modulo 2**32
    seed_worker(0)
    got = (random.random(), float(np.random.rand()))
    random.seed(17)
    np.random.seed(17)
    assert got == (random.random(), float(np.random.rand()))


class Noisy(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([random.random(), float(np.random.rand()), float(torch.rand(()))], dtype=torch.float64)


def test_seeded_loader_workers_are_reproducible_and_differ_from_each_other():
    def run() -> torch.Tensor:
        loader = DataLoader(
            Noisy(),
            batch_size=4,
            num_workers=2,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(7),
        )
        return torch.cat(list(loader))

    first, second = run(), run()
    assert torch.equal(first, second)
    # batch 0 comes from worker 0, batch 1 from worker 1: every stream must differ between them
    assert all(first[0, c] != first[4, c] for c in range(3))


@pytest.fixture
def restore_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield monkeypatch
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]


def test_deterministic_mode_sets_and_clears_the_framework_flags(restore_flags):
    torch.backends.cudnn.benchmark = True
    set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic is False
    restore_flags.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    set_deterministic(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # a user's own setting is kept
    with pytest.raises(TypeError, match="expects a bool"):
        set_deterministic(1)  # type: ignore[arg-type]
