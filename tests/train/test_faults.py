"""Faults on the user's path (issue 13): locks, dead ends, foreign checkpoints, full disks, NaN weights, bad configs.

Each test reproduces one reported fault with real files written by the test (or a fault injected at the
OS boundary: ``torch.save`` / ``os.write`` raising ``ENOSPC``), and checks the documented outcome
(docs/run-folder.md).
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')
pytest.importorskip("tensorboard", reason='the trainer needs the train extra: pip install "modbalance[train]"')

from modbalance.cli import main
from modbalance.runfolder import read_metrics
from modbalance.train import NonFiniteLossError, load_config, run
from modbalance.train import trainer as trainer_module
from modbalance.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from modbalance.train.config import ConfigError

STEPS_PER_EPOCH = 8  # lab/tiny: 240 samples, batches of 32


def tiny(tmp_path: Path, name: str, *overrides: str):
    return load_config("lab/tiny", [f"output_dir={tmp_path}", f"run_name={name}", "train.probe=false", *overrides])


def stop_at(monkeypatch, epoch: int, batch: int, error: BaseException) -> None:
    """Make the training loop raise ``error`` when it reaches ``batch`` of ``epoch`` (a crash there)."""
    real = trainer_module.iterate_batches

    def batches(bundle, split, sampler, **kwargs):
        for index, item in enumerate(real(bundle, split, sampler, **kwargs)):
            if split == "train" and sampler.epoch == epoch and sampler.start_batch + index == batch:
                raise error
            yield item

    monkeypatch.setattr(trainer_module, "iterate_batches", batches)


# ------------------------------------------------------------------------------------------ 2. run-folder lock
HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    folder = sys.argv[1]
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    print("locked", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.slow
def test_a_second_trainer_or_a_resume_over_a_live_run_is_refused_naming_the_folder_and_pid(tmp_path):
    fresh = tmp_path / "fresh"
    finished = run(tiny(tmp_path, "done", "train.epochs=1"))
    before = (finished / "metrics.jsonl").read_bytes()
    holders = {
        folder: subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
        for folder in (fresh, finished)
    }
    try:
        for holder in holders.values():
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"{fresh} is in use.*pid {holders[fresh].pid}"):
            run(tiny(tmp_path, "fresh", "train.epochs=1"))
        with pytest.raises(RuntimeError, match=rf"{finished} is in use.*pid {holders[finished].pid}"):
            run(resume=finished)
        assert main(["train", "--config", "lab/tiny", f"output_dir={tmp_path}", "run_name=fresh"]) == 4
        assert main(["train", "--resume", str(finished)]) == 4
        assert not (fresh / "metrics.jsonl").exists() and (finished / "metrics.jsonl").read_bytes() == before
    finally:
        for holder in holders.values():
            holder.kill()  # SIGKILL: the OS releases the lock
            holder.wait()
    run(tiny(tmp_path, "fresh", "train.epochs=1"))  # the dead holder's lock is gone
    assert [r["epoch"] for r in read_metrics(fresh / "metrics.jsonl")] == [0]
    fd = os.open(fresh / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at the end of the run
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ 3. epoch-0 failures
def test_a_crash_in_epoch_0_can_be_resumed_or_rerun(tmp_path, monkeypatch):
    reference = run(tiny(tmp_path, "ref", "train.epochs=1", "method.name=ogm"))
    stop_at(monkeypatch, epoch=0, batch=3, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run(tiny(tmp_path, "r", "train.epochs=1", "method.name=ogm"))
    assert not (tmp_path / "r" / "metrics.jsonl").exists()  # nothing that looks like a run yet
    monkeypatch.undo()
    folder = run(resume=tmp_path / "r")  # starts from the beginning: there is no checkpoint yet
    assert read_metrics(folder / "metrics.jsonl") == read_metrics(reference / "metrics.jsonl")
    stop_at(monkeypatch, epoch=0, batch=3, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run(tiny(tmp_path, "again", "train.epochs=1", "method.name=ogm"))
    monkeypatch.undo()
    folder = run(tiny(tmp_path, "again", "train.epochs=1", "method.name=ogm"))  # a rerun is accepted too
    assert read_metrics(folder / "metrics.jsonl") == read_metrics(reference / "metrics.jsonl")


# ------------------------------------------------------------------------------------------ 4. foreign checkpoint
def test_a_checkpoint_of_another_run_is_refused_naming_the_file_and_the_differing_keys(tmp_path):
    mine = run(tiny(tmp_path, "mine", "train.epochs=1", "seed=0"))
    other = run(tiny(tmp_path, "other", "train.epochs=1", "seed=1", "method.name=ogm"))
    last = mine / "checkpoints" / "last.pt"
    last.write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    with pytest.raises(CheckpointError) as info:
        run(resume=mine)
    message = str(info.value)
    assert str(last) in message and "seed" in message and "method.name" in message
    assert "run_name" not in message  # the folder name is not a difference of the training
    assert main(["train", "--resume", str(mine)]) == 2


# ------------------------------------------------------------------------------------------ 5. rotation
def test_a_bit_flipped_newest_checkpoint_never_becomes_the_fallback(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.arange(1000.0)})
    save_checkpoint(path, {"step": 2, "w": torch.arange(1000.0)}, keep_previous=True)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # same length, same header: only the checksum tells
    path.write_bytes(bytes(data))
    save_checkpoint(path, {"step": 3, "w": torch.arange(1000.0)}, keep_previous=True)
    assert load_checkpoint(tmp_path / "last.prev.pt")["step"] == 1
    assert load_checkpoint(path)["step"] == 3


# ------------------------------------------------------------------------------------------ 6. full disk
def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_checkpointing_is_a_named_error_with_its_own_exit_code(tmp_path, monkeypatch, capsys):
    from modbalance.train import checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module.torch, "save", _no_space)
    code = main(["train", "--config", "lab/tiny", f"output_dir={tmp_path}", "run_name=r", "train.epochs=1"])
    err = capsys.readouterr().err
    assert code == 3
    assert "No space left on device" in err and "checkpoints" in err and "best.pt" in err
    assert "Traceback" not in err


def _limit_file_size(limit: int):
    def apply() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics checked on Linux")
def test_a_real_write_failure_stops_with_exit_3_and_keeps_the_checkpoints(tmp_path):
    """No monkeypatching: the OS refuses every write that makes a file bigger than 64 kB (like a full disk)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "modbalance", "train", "--config", "lab/tiny", f"output_dir={tmp_path}"]
    args = ["run_name=r", "train.epochs=1", "train.progress=false", "model.encoders.audio.options.hidden_dim=512"]
    done = subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, preexec_fn=_limit_file_size(64_000), timeout=300
    )
    assert done.returncode == 3, done.stderr
    assert "File too large" in done.stderr and "checkpoints" in done.stderr and "Traceback" not in done.stderr
    for name in ("last.pt", "best.pt", "last.prev.pt"):
        path = tmp_path / "r" / "checkpoints" / name
        assert not path.exists() or load_checkpoint(path)  # whatever exists is complete
    assert not list((tmp_path / "r" / "checkpoints").glob(".*.tmp"))  # no temporary file left


def test_a_failed_append_leaves_no_torn_record(tmp_path, monkeypatch):
    from modbalance import runfolder as outputs

    folder = run(tiny(tmp_path, "r", "train.epochs=1"))
    metrics = folder / "metrics.jsonl"
    before = metrics.read_bytes()
    files = outputs.RunFiles(folder)
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "write", half_then_full)
    with pytest.raises(outputs.RunWriteError, match=r"metrics.jsonl.*No space left"):
        files.append_record({"epoch": 1, "step": 16, "train/loss": 1.0})
    assert metrics.read_bytes() == before


def test_a_torn_last_line_is_ignored_with_a_warning(tmp_path, recwarn):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "x": 1.0}\n{"epoch": 1, "x"')
    with pytest.warns(UserWarning, match=r"metrics.jsonl:2: ignoring a torn last line"):
        assert read_metrics(path) == [{"epoch": 0, "x": 1.0}]
    path.write_text('{"epoch": 0, "x": 1.0}\n{"epoch": 1, "x"\n{"epoch": 2}\n')  # not the last line: damage
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(path)


def test_report_reads_a_run_whose_metrics_end_in_a_torn_line_with_a_warning(tmp_path):
    folder = run(tiny(tmp_path / "runs", "r", "train.epochs=2"))
    metrics = folder / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:-40])  # the last record cut short, as by a crash mid-append
    with pytest.warns(UserWarning, match=r"metrics.jsonl:2: ignoring a torn last line"):
        assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").exists()


# ------------------------------------------------------------------------------------------ 7. NaN weights
def test_nan_weights_reaching_validation_stop_the_run_like_a_nan_loss(tmp_path, monkeypatch):
    real = trainer_module.train_step

    def step(parts, inputs, target, *, step, **kwargs):
        real(parts, inputs, target, step=step, **kwargs)
        if step == STEPS_PER_EPOCH:  # the last step of epoch 0: its loss was finite, the weights are not
            with torch.no_grad():
                next(parts.core.parameters()).fill_(float("nan"))

    monkeypatch.setattr(trainer_module, "train_step", step)
    with pytest.raises(NonFiniteLossError) as info:
        run(tiny(tmp_path, "r", "method.name=ogm", "train.epochs=2"))
    message = str(info.value)
    assert f"step {STEPS_PER_EPOCH} (epoch 0)" in message and "non-finite weights" in message
    assert "no checkpoint" in message and "checkpoint was kept" not in message


def test_the_divergence_message_names_the_kept_checkpoint_only_when_one_exists(tmp_path):
    config = tiny(tmp_path, "r", "optim.lr=1e30", "method.name=ogm_ge")
    with pytest.raises(NonFiniteLossError) as info:
        run(config)
    assert "checkpoint was kept" not in str(info.value) and "no checkpoint" in str(info.value)


# ------------------------------------------------------------------------------------------ 8. TensorBoard
def test_tensorboard_holds_epoch_0_once_after_a_resume_inside_epoch_0(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run(tiny(tmp_path, "r", "train.epochs=1", "train.checkpoint_every_steps=3"))
    (folder / "checkpoints" / "last.pt").unlink()  # as if killed after the epoch record, before its checkpoint
    assert load_checkpoint(folder / "checkpoints" / "last.prev.pt")["position"]["epoch"] == 0
    run(resume=folder)
    events = EventAccumulator(str(folder / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [0]


# ------------------------------------------------------------------------------------------ 12. config files
@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("method:\n  name: ogm\n  alpha: [1, 2\n", "4: .*line 3"),
        ("method:\n\tname: ogm\n", 2),
        ("seed: 1\nmethod:\n  name: ogm\n  name: opm\n", 4),
    ],
    ids=["syntax", "tab", "duplicate"],
)
def test_invalid_yaml_is_a_config_error_naming_the_file_and_line(tmp_path, text, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{path}:{line}"):
        load_config(path)


def test_binary_garbage_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=rf"{path}"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train=5", r"train: a section"),
        (f"seed={10**70}", r"seed=1000.*out of range"),
        ("run_name=..", r"run_name='\.\.'"),
        ("run_name=.", r"run_name='\.'"),
        ("run_name=a/b", r"run_name='a/b'"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config("lab/tiny", [override])


def test_absurd_model_sizes_are_refused_before_allocating(tmp_path):
    config = tiny(tmp_path, "r", "model.encoders.audio.options.hidden_dim=100000000")
    with pytest.raises(ConfigError, match=r"encoders.audio: the encoder has 1,700,000,008 parameters.*max_elements"):
        run(config)  # 16 x 1e8 + 1e8 weights: 6.8 GB, refused before it is allocated
    assert not (tmp_path / "r" / "checkpoints").exists()
    config = tiny(tmp_path, "r", "model.encoders.audio.options.hidden_dim=10000000", "train.max_elements=200000000")
    with pytest.raises(ConfigError, match=r"model.encoders.audio: .*makes a 320,000,000-element activation"):
        run(config)  # 1.7e8 weights are within the limit, a (32, 1e7) activation is not


# ------------------------------------------------------------------------------------------ 17. CLI
def test_eval_on_cuda_without_cuda_exits_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this build has CUDA")
    folder = run(tiny(tmp_path, "r", "train.epochs=1"))
    assert main(["eval", "--run", str(folder), "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys, kind):
    target = tmp_path / "x"
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("hello")
    assert main(["train", "--resume", str(target)]) == 2
    err = capsys.readouterr().err
    assert "is not a run folder" in err and "shipped configs" not in err


def test_every_exit_code_in_the_docs_table_is_the_code_of_its_command():
    from modbalance.commands import train as train_command

    text = (Path(__file__).resolve().parents[2] / "docs" / "run-folder.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| command |"))
    row = next(line for line in text.splitlines() if line.startswith("| `modbalance train` |"))
    codes = [cell.strip() for cell in header.strip("|").split("|")][1:]
    meanings = dict(zip(codes, [cell.strip() for cell in row.strip("|").split("|")][1:], strict=True))
    assert "diverged" in meanings[str(train_command.EXIT_DIVERGED)]
    assert "bad config" in meanings[str(train_command.EXIT_USAGE)]
    assert "could not be written" in meanings[str(train_command.EXIT_WRITE_FAILED)]
    assert "in use" in meanings[str(train_command.EXIT_BUSY)]
