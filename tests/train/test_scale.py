"""The trainer at scale and under failure, on the lab's ``tiny`` preset (CPU).

* two processes under ``torchrun`` (gloo) against one process with the same global batch;
* a run killed with SIGKILL mid-epoch and resumed, against an uninterrupted run;
* fp16 with a gradient scaler: OGM modulates unscaled gradients, before the scaler's step;
* gradient accumulation: the same OGM coefficients and parameters as the whole batch;
* deterministic mode;
* resume from ``last.prev.pt`` when ``last.pt`` is damaged, and refusal when no checkpoint is usable.

Every training run that is compared bit for bit runs in a child process with one thread, so the
comparisons do not depend on the state of the test process.
"""

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')
pytest.importorskip("tensorboard", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.ogm import OGM
from modbalance.runfolder import read_metrics
from modbalance.train import load_config, run
from modbalance.train import trainer as trainer_module
from modbalance.train.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.slow

#: Child-process wrapper around the command line: ``child.py DUMP_DIR STOP_STEP modbalance-args...``.
#: It runs ``modbalance.cli.main(args)`` (what ``python -m modbalance`` runs) with two test hooks:
#: every rank saves its parameters just before the end-of-run test evaluation (which reloads the
#: best checkpoint), and with STOP_STEP > 0 the run marks and hangs after that global step, to be killed.
CHILD = r"""
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from modbalance.cli import main
from modbalance.train import trainer as T

dump, stop_step, *argv = sys.argv[1:]
stop_step = int(stop_step)
finish = T.finish_run

def dumping_finish(config, ctx, files, core, *args, **kwargs):
    params = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
    torch.save(params, Path(dump) / f"params-rank{ctx.rank}-of-{ctx.world_size}.pt")
    finish(config, ctx, files, core, *args, **kwargs)

T.finish_run = dumping_finish
if stop_step > 0:
    step_fn = T.train_step
    def hanging_step(*args, step, **kwargs):
        step_fn(*args, step=step, **kwargs)
        if step == stop_step:
            (Path(dump) / "hanging").write_text(str(step))
            time.sleep(600)
    T.train_step = hanging_step
sys.exit(main(argv))
"""


def wrapped(tmp_path: Path, dump: Path, argv: list[str], *, stop_step: int = 0) -> list[str]:
    """Arguments running the command line ``modbalance ARGV`` through the hooked wrapper."""
    script = tmp_path / "child.py"
    if not script.exists():
        script.write_text(CHILD)
    dump.mkdir(parents=True, exist_ok=True)
    return [str(script), str(dump), str(stop_step), *argv]


def cli(argv: list[str]) -> list[str]:
    """Arguments running ``python -m modbalance ARGV`` unmodified."""
    return ["-m", "modbalance", *argv]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(args: list[str], *, launcher: list[str] | None = None) -> subprocess.Popen:
    command = [sys.executable, *(launcher or []), *args]
    return subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"child failed ({process.returncode}):\n{output[-4000:]}"
    return output


def train_args(out: Path, name: str, method: str, *extra: str) -> list[str]:
    """``train --config lab/tiny`` with the output folder, run name and method set."""
    overrides = [f"output_dir={out}", f"run_name={name}", f"method.name={method}", "train.device=cpu", *extra]
    return ["train", "--config", "lab/tiny", *overrides]


# ------------------------------------------------------------------------------------------ (a) torchrun
#: Tolerance of the two-process comparison. DDP averages the two ranks' gradients, the single
#: process averages over the whole batch: the same numbers summed in another order, so the runs
#: agree to float32 rounding (observed differences ~1e-7), amplified a little by 16 SGD steps.
DDP_ATOL = 1e-5


def test_two_torchrun_processes_match_one_process_with_the_same_global_batch(tmp_path):
    out = tmp_path / "runs"
    common = ["train.epochs=2", "train.eval_batch_size=64", "train.probe=false"]
    # ogm_ge: coefficients from all-reduced scores, GE noise from the shared generator
    # torchrun ... child.py (hooks) train --config lab/tiny ...; the single process is the plain command line
    two = start(
        wrapped(tmp_path, tmp_path / "two", train_args(out, "two", "ogm_ge", *common, "train.batch_size=16")),
        launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    )
    one = start(cli(train_args(out, "one", "ogm_ge", *common, "train.batch_size=32")))
    finish(one)
    finish(two)

    rank0 = torch.load(tmp_path / "two" / "params-rank0-of-2.pt")
    rank1 = torch.load(tmp_path / "two" / "params-rank1-of-2.pt")
    assert all(
        torch.equal(v, rank0[k]) for k, v in load_checkpoint(out / "two" / "checkpoints" / "last.pt")["model"].items()
    )
    single = load_checkpoint(out / "one" / "checkpoints" / "last.pt")["model"]  # the final weights
    assert list(rank0) == list(rank1) == list(single)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"replicas differ in {key}"
        torch.testing.assert_close(rank0[key], single[key], rtol=0, atol=DDP_ATOL, msg=f"{key} differs from 1 process")

    records_two, records_one = read_metrics(out / "two" / "metrics.jsonl"), read_metrics(out / "one" / "metrics.jsonl")
    assert len(records_two) == len(records_one) == 2
    for a, b in zip(records_two, records_one, strict=True):
        assert a.keys() == b.keys()
        assert a["step"] == b["step"] == 8 * (a["epoch"] + 1)  # 240 samples / global batch 32 = 8 steps
        for key in a:
            assert math.isclose(a[key], b[key], rel_tol=0, abs_tol=DDP_ATOL), (key, a[key], b[key])
    assert any(r["train/k/audio"] < 1 or r["train/k/visual"] < 1 for r in records_one)  # OGM really acted
    summary_two = json.loads((out / "two" / "summary.json").read_text())
    summary_one = json.loads((out / "one" / "summary.json").read_text())
    assert (summary_two["world_size"], summary_one["world_size"]) == (2, 1)
    for key, value in summary_one["test"].items():
        assert math.isclose(summary_two["test"][key], value, rel_tol=0, abs_tol=DDP_ATOL), key
    # rank 0 alone wrote the run folder: exactly one folder per run, no per-rank files
    assert sorted(p.name for p in out.iterdir()) == ["one", "two"]
    assert sorted(p.name for p in (out / "two" / "checkpoints").iterdir()) == ["best.pt", "last.prev.pt", "last.pt"]


# ------------------------------------------------------------------------------------------ (b) kill + resume
@pytest.mark.parametrize("method", ["ogm_ge", "opm+ogm"])
def test_sigkill_mid_epoch_then_resume_ends_identical_to_an_uninterrupted_run(tmp_path, method):
    out = tmp_path / "runs"
    common = ["train.epochs=3", "train.checkpoint_every_steps=3", "train.probe=false"]
    reference = start(cli(train_args(out, "ref", method, *common)))
    # 8 steps per epoch; checkpoints at steps 3, 6, 8 (epoch end), 9, 12; killed after step 14 (epoch 1, batch 6)
    victim = start(wrapped(tmp_path, tmp_path / "cut", train_args(out, "cut", method, *common), stop_step=14))
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "cut" / "hanging").exists():
            assert victim.poll() is None, f"child ended early:\n{victim.stdout.read() if victim.stdout else ''}"
            assert time.monotonic() < deadline, "child never reached step 14"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    run_dir = out / "cut"
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["position"] == {"epoch": 1, "batch": 4} and state["global_step"] == 12  # a mid-epoch checkpoint
    assert not (run_dir / "summary.json").exists()
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 1  # epoch 0 only

    finish(start(cli(["train", "--resume", str(run_dir)])))  # python -m modbalance train --resume RUN_DIR
    finish(reference)

    assert read_metrics(run_dir / "metrics.jsonl") == read_metrics(out / "ref" / "metrics.jsonl")  # exact equality
    resumed = json.loads((run_dir / "summary.json").read_text())
    uninterrupted = json.loads((out / "ref" / "summary.json").read_text())
    for summary in (resumed, uninterrupted):
        summary.pop("run_name"), summary.pop("wall_time_s")
    assert resumed == uninterrupted
    final_resumed = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    final_reference = load_checkpoint(out / "ref" / "checkpoints" / "last.pt")["model"]
    for key, value in final_reference.items():
        assert torch.equal(final_resumed[key], value), key


# ------------------------------------------------------------------------------------------ in-process runs
def tiny(tmp_path: Path, name: str, *overrides: str) -> Path:
    config = load_config(
        "lab/tiny",
        [f"output_dir={tmp_path / 'runs'}", f"run_name={name}", "train.device=cpu", "train.probe=false", *overrides],
    )
    return run(config)


def test_fp16_scaler_unscales_before_ogm_modulates_and_steps_after(tmp_path, monkeypatch):
    """A real ``GradScaler("cpu")`` with fp16 autocast (supported on CPU by this torch), spied on."""
    events: list[tuple] = []
    scaler_cls = torch.amp.GradScaler
    unscale, step, update, modulate = scaler_cls.unscale_, scaler_cls.step, scaler_cls.update, OGM.modulate

    def spy_unscale(self, optimizer):
        events.append(("unscale", self.get_scale()))
        return unscale(self, optimizer)

    def spy_step(self, optimizer, *args, **kwargs):
        events.append(("step",))
        return step(self, optimizer, *args, **kwargs)

    def spy_update(self, *args, **kwargs):
        events.append(("update",))
        return update(self, *args, **kwargs)

    def spy_modulate(self, *args, scaler=None, optimizer=None, **kwargs):
        probe = self.groups["audio"][0]
        before = probe.grad.detach().clone()
        events.append(("modulate", scaler is not None, optimizer is not None))
        k = modulate(self, *args, scaler=scaler, optimizer=optimizer, **kwargs)
        # no noise (method ogm): the gradient leaving OGM is k * (scaled gradient / scale)
        expected = before * (k["audio"] / scaler.get_scale())
        events.append(("modulated", bool(torch.allclose(probe.grad, expected, rtol=1e-5, atol=1e-12)), k["audio"]))
        return k

    monkeypatch.setattr(scaler_cls, "unscale_", spy_unscale)
    monkeypatch.setattr(scaler_cls, "step", spy_step)
    monkeypatch.setattr(scaler_cls, "update", spy_update)
    monkeypatch.setattr(OGM, "modulate", spy_modulate)
    tiny(tmp_path, "fp16", "method.name=ogm", "train.precision=fp16", "train.epochs=1")

    assert len(events) == 8 * 5  # 8 optimizer steps
    for i in range(0, len(events), 5):
        names = [e[0] for e in events[i : i + 5]]
        assert names == ["modulate", "unscale", "modulated", "step", "update"], names
        assert events[i][1:] == (True, True)  # the trainer hands OGM the scaler and the optimizer
        assert events[i + 1][1] > 1.0  # a real loss scale was in use
        assert events[i + 2][1], "OGM did not act on the unscaled gradients"
    assert any(e[2] < 1.0 for e in events if e[0] == "modulated")  # audio was really modulated


def test_gradient_accumulation_gives_the_coefficients_and_weights_of_the_whole_batch(tmp_path, monkeypatch):
    calls: dict[str, list] = {"modulate": [], "accumulate": []}
    modulate, accumulate = OGM.modulate, OGM.accumulate

    def spy_modulate(self, *args, **kwargs):
        k = modulate(self, *args, **kwargs)
        calls["modulate"].append((dict(k), dict(self.last_ratios)))
        return k

    def spy_accumulate(self, logits, target):
        calls["accumulate"].append(target.shape[0])
        return accumulate(self, logits, target)

    monkeypatch.setattr(OGM, "modulate", spy_modulate)
    monkeypatch.setattr(OGM, "accumulate", spy_accumulate)
    whole = tiny(tmp_path, "whole", "method.name=ogm", "train.epochs=1", "train.batch_size=32")
    whole_calls, calls["modulate"] = calls["modulate"], []
    # modulate(logits, y) itself accumulates its (last) batch: one call per step without accumulation
    assert calls["accumulate"] == [32] * 7 + [16]
    calls["accumulate"] = []
    split = tiny(
        tmp_path, "split", "method.name=ogm", "train.epochs=1", "train.batch_size=32", "train.grad_accum_steps=2"
    )

    assert len(whole_calls) == len(calls["modulate"]) == 8  # once per optimizer step, not per micro-batch
    assert calls["accumulate"] == [16, 16] * 7 + [8, 8]  # both halves of each batch (the last has 16 samples)
    assert any(k["audio"] < 1 or k["visual"] < 1 for k, _ in whole_calls)
    for (k_whole, rho_whole), (k_split, rho_split) in zip(whole_calls, calls["modulate"], strict=True):
        for m in k_whole:
            assert math.isclose(k_whole[m], k_split[m], rel_tol=1e-5), (m, k_whole[m], k_split[m])
            assert math.isclose(rho_whole[m], rho_split[m], rel_tol=1e-5)
    a = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_deterministic_mode_is_on_during_training_only_and_runs_repeat(tmp_path, monkeypatch):
    seen: list[tuple[bool, bool]] = []
    step_fn = trainer_module.train_step

    def spy_step(*args, **kwargs):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic))
        return step_fn(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", spy_step)
    assert not torch.are_deterministic_algorithms_enabled()
    first = tiny(tmp_path, "det1", "method.name=opm", "train.epochs=1", "train.deterministic=true")
    assert seen and all(flags == (True, True) for flags in seen)
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    second = tiny(tmp_path, "det2", "method.name=opm", "train.epochs=1", "train.deterministic=true")
    assert read_metrics(first / "metrics.jsonl") == read_metrics(second / "metrics.jsonl")
    seen.clear()
    tiny(tmp_path, "nondet", "method.name=opm", "train.epochs=1")
    assert seen and all(flags == (False, False) for flags in seen)


# ------------------------------------------------------------------------------------------ damaged checkpoints
def test_resume_refuses_a_truncated_checkpoint_naming_the_file(tmp_path):
    run_dir = tiny(tmp_path, "r", "method.name=ogm", "train.epochs=1")
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:-64])
    with pytest.raises(CheckpointError, match=r"truncated") as info:
        run(resume=run_dir)
    assert str(last) in str(info.value)


def _flip_payload_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_falls_back_to_the_previous_checkpoint_exactly_and_refuses_when_both_are_damaged(tmp_path, caplog):
    args = ("method.name=ogm_ge", "train.epochs=1", "train.checkpoint_every_steps=3")
    reference = tiny(tmp_path, "ref", *args)
    run_dir = tiny(tmp_path, "fb", *args)  # checkpoints after steps 3, 6 and 8 (the end of the only epoch)
    last, previous = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.prev.pt"
    assert load_checkpoint(previous)["global_step"] == 6 and load_checkpoint(last)["global_step"] == 8

    _flip_payload_bit(last)  # the newest is damaged: resume from step 6, redo steps 7 and 8
    with caplog.at_level(logging.WARNING, logger="modbalance.train.checkpoint"):
        run(resume=run_dir)
    assert any("last.pt" in r.getMessage() and "checksum mismatch" in r.getMessage() for r in caplog.records)
    assert read_metrics(run_dir / "metrics.jsonl") == read_metrics(reference / "metrics.jsonl")
    a = load_checkpoint(last)["model"]
    b = load_checkpoint(reference / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)

    _flip_payload_bit(last)
    previous.write_bytes(previous.read_bytes()[:-64])
    with pytest.raises(
        CheckpointError, match=r"no valid checkpoint; last.pt: checksum mismatch.*last.prev.pt: truncated"
    ):
        run(resume=run_dir)
