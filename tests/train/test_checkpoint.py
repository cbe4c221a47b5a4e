"""Checkpoint files: format, atomic replacement (with a real SIGKILL), damage refusal, fallback, RNG state."""

import hashlib
import io
import os
import random
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from modbalance import OGM, OPM
from modbalance.train.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    capture_rng_state,
    latest_valid_checkpoint,
    load_checkpoint,
    previous_path,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)

HEADER = 52  # 8 magic + 4 version + 8 length + 32 sha256, as documented in the module


def training_state() -> dict:
    """Everything a trainer stores: model, optimizer, scheduler, scaler, OGM/OPM, RNG, position."""
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    ogm = OGM({"a": model[0], "b": model[2]}, alpha=0.5, noise=True, generator=torch.Generator().manual_seed(3))
    opm = OPM(generator=torch.Generator().manual_seed(4))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "ogm": ogm.state_dict(),
        "opm": opm.state_dict(),
        "rng": capture_rng_state(),
        "epoch": 2,
        "step": 17,
        "batch_in_epoch": 5,
        "config": {"alpha": 0.5, "name": "tiny", "betas": (0.9, 0.999), "device": torch.device("cpu")},
    }


def assert_same(a, b) -> None:
    assert type(a) is type(b) or (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


# ------------------------------------------------------------------------------------------ format
def test_round_trip_of_a_full_training_state_with_weights_only(tmp_path):
    state = training_state()
    save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(tmp_path / "last.pt", map_location="cpu", required=("model", "optimizer", "rng"))
    assert_same(state, loaded)


def test_header_holds_magic_version_length_and_sha256_of_the_payload(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.arange(6.0)})
    data = path.read_bytes()
    magic, version, length, digest = struct.unpack("<8sIQ32s", data[:HEADER])
    assert (magic, version) == (b"MODBALCK", 1)
    assert length == len(data) - HEADER
    assert digest == hashlib.sha256(data[HEADER:]).digest()
    # the payload is an ordinary torch.save archive
    assert torch.equal(torch.load(io.BytesIO(data[HEADER:]), weights_only=True)["w"], torch.arange(6.0))


def test_unstorable_objects_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match=r"state\['rng'\]\['np'\].*numpy"):
        save_checkpoint(tmp_path / "c.pt", {"rng": {"np": np.zeros(3)}})
    with pytest.raises(TypeError, match=r"state\['fn'\]"):
        save_checkpoint(tmp_path / "c.pt", {"fn": lambda x: x})
    with pytest.raises(TypeError, match="mapping"):
        save_checkpoint(tmp_path / "c.pt", [1, 2])  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ atomicity
def test_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"step": 2, "big": torch.randn(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_failure_while_serialising_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 2, "big": torch.randn(1000)})
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


CHILD = r"""
import os, sys, time
from pathlib import Path
import torch
from modbalance.train import checkpoint

path, marker = Path(sys.argv[1]), Path(sys.argv[2])
checkpoint.save_checkpoint(path, {"step": 1, "w": torch.ones(10)})

def hang(fd):  # the temporary file is fully written; die before the rename
    marker.write_text("writing")
    time.sleep(600)

os.fsync = hang
checkpoint.save_checkpoint(path, {"step": 2, "w": torch.zeros(200_000)})
"""


def test_process_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    path, marker = tmp_path / "run" / "last.pt", tmp_path / "marker"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(path), str(marker)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else "child exited"
            assert time.monotonic() < deadline, "child never reached the write"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        if child.stderr:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    leftovers = [p for p in path.parent.iterdir() if p.name != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".tmp")  # the unfinished write, never renamed
    assert leftovers[0].stat().st_size > 200_000 * 4  # it really was mid-way through the big save
    assert load_checkpoint(path)["step"] == 1
    assert latest_valid_checkpoint(path.parent) == path
    save_checkpoint(path, {"step": 3})  # the next save clears the stale temporary
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


# ------------------------------------------------------------------------------------------ damage
def _flip(offset: int):
    def damage(data: bytes) -> bytes:
        i = offset if offset >= 0 else len(data) + offset
        return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :]

    return damage


DAMAGE = {
    "truncated payload": (
        lambda d: d[: len(d) - 100],
        r"truncated: header announces \d+ payload bytes, file holds \d+",
    ),
    "truncated header": (lambda d: d[:30], "truncated: 30 bytes"),
    "empty file": (lambda d: b"", "truncated: 0 bytes"),
    "bit flip in payload": (_flip(-200), "checksum mismatch"),
    "bit flip in stored hash": (_flip(25), "checksum mismatch"),
    "bit flip in magic": (_flip(0), "not a modbalance checkpoint"),
    "bit flip in version": (_flip(8), "format version 17 is not supported"),
    "trailing garbage": (lambda d: d + b"\0" * 7, "7 unexpected bytes after"),
    "random bytes": (lambda d: bytes(range(256)) * 4, "not a modbalance checkpoint"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_checkpoints_are_refused_with_a_message_naming_the_file(tmp_path, kind):
    damage, message = DAMAGE[kind]
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"w": torch.randn(500), "step": 4})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and info.value.path == path
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(path)


def test_a_plain_torch_save_file_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match=r"not a modbalance checkpoint.*plain torch\.save file"):
        load_checkpoint(path)


def _wrap(payload: bytes) -> bytes:
    return struct.pack("<8sIQ32s", b"MODBALCK", 1, len(payload), hashlib.sha256(payload).digest()) + payload


class Custom:  # a class weights_only refuses to rebuild
    pass


def test_intact_payloads_that_are_not_loadable_state_dicts_are_refused(tmp_path):
    buffer = io.BytesIO()
    torch.save([1, 2, 3], buffer)
    (tmp_path / "list.pt").write_bytes(_wrap(buffer.getvalue()))
    with pytest.raises(CheckpointError, match="payload is a list, expected a dict"):
        load_checkpoint(tmp_path / "list.pt")
    buffer = io.BytesIO()
    torch.save({"obj": Custom()}, buffer)
    (tmp_path / "pickle.pt").write_bytes(_wrap(buffer.getvalue()))
    with pytest.raises(CheckpointError, match=r"does not load with torch.load\(weights_only=True\)"):
        load_checkpoint(tmp_path / "pickle.pt")


def test_missing_file_and_missing_required_keys(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "epoch": 0})
    with pytest.raises(CheckpointError, match=r"missing required key.*'optimizer'.*'rng'"):
        load_checkpoint(tmp_path / "c.pt", required=("model", "optimizer", "rng"))


# ------------------------------------------------------------------------------------------ fallback
def test_keep_previous_keeps_the_replaced_file_and_falls_back_to_it(tmp_path):
    path = tmp_path / "last.pt"
    assert previous_path(path) == tmp_path / "last.prev.pt"
    save_checkpoint(path, {"step": 1}, keep_previous=True)
    assert not previous_path(path).exists()  # nothing to keep yet
    save_checkpoint(path, {"step": 2}, keep_previous=True)
    save_checkpoint(path, {"step": 3}, keep_previous=True)
    assert load_checkpoint(path)["step"] == 3
    assert load_checkpoint(previous_path(path))["step"] == 2
    assert latest_valid_checkpoint(tmp_path) == path

    path.write_bytes(path.read_bytes()[:-10])  # newest damaged (a torn copy, a bad disk)
    assert latest_valid_checkpoint(tmp_path) == previous_path(path)
    assert load_checkpoint(latest_valid_checkpoint(tmp_path))["step"] == 2


def test_a_damaged_newest_file_never_replaces_the_good_fallback(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2}, keep_previous=True)
    path.write_bytes(b"MODBALCK garbage")
    save_checkpoint(path, {"step": 3}, keep_previous=True)
    assert load_checkpoint(path)["step"] == 3
    assert load_checkpoint(previous_path(path))["step"] == 1


def test_latest_valid_checkpoint_edge_cases(tmp_path):
    assert latest_valid_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        latest_valid_checkpoint(tmp_path / "missing")
    (tmp_path / "last.pt").write_bytes(b"junk")
    (tmp_path / "last.prev.pt").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=r"no valid checkpoint; last.pt: not a modbalance.*last.prev.pt: truncated"
    ):
        latest_valid_checkpoint(tmp_path)
    save_checkpoint(tmp_path / "step_10.pt", {"step": 10})
    assert latest_valid_checkpoint(tmp_path, names=("step_20.pt", "step_10.pt")) == tmp_path / "step_10.pt"


# ------------------------------------------------------------------------------------------ RNG state
def draws() -> tuple:
    return (
        [random.random() for _ in range(3)],
        np.random.rand(3).tolist(),
        np.random.normal(size=1).tolist(),
        torch.rand(3),
        torch.randint(0, 1000, (4,)),
    )


def test_rng_state_round_trip_through_a_checkpoint_repeats_every_stream(tmp_path):
    random.seed(5)
    np.random.seed(6)
    np.random.normal(size=1)  # leaves a cached Gaussian (has_gauss=1) in NumPy's state
    torch.manual_seed(7)
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    first = draws()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)  # scramble every stream
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    second = draws()
    assert first[0] == second[0] and first[1] == second[1] and first[2] == second[2]
    assert torch.equal(first[3], second[3]) and torch.equal(first[4], second[4])
    # and the snapshot really was of the seeded state, not of something later
    random.seed(5)
    assert first[0] == [random.random() for _ in range(3)]


def test_rng_state_without_cuda_records_none_and_bad_states_are_refused():
    state = capture_rng_state()
    if not torch.cuda.is_available():
        assert state["cuda"] is None
    with pytest.raises(ValueError, match=r"missing \['numpy'\]"):
        restore_rng_state({k: v for k, v in state.items() if k != "numpy"})
