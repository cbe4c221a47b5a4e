"""Every benchmark end to end on tiny fixtures: raw release -> ``prepare`` -> a one-epoch run of its shipped config.

Each fixture is a real raw release in the dataset's own layout (videos with AAC audio, the official
list files, MulT's pickle), written into ``tmp_path``. The run uses the shipped config with overrides
for tiny sizes only (64-px frames, batches of 2, one epoch); the ResNet-18 and Transformer encoders are
kept. Also: skipped samples are counted in ``metrics.jsonl``, a bad file under ``on_error=raise`` is
named in the error, train-time draws follow the epoch, and held-out validation rows use eval transforms.
"""

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("omegaconf", reason='the trainer needs the train extra: pip install "modbalance[train]"')
pytest.importorskip("av", reason='the fixtures need PyAV: pip install "modbalance[data]"')

from modbalance.data import layout, media
from modbalance.data.av_toy import make_av_toy_release
from modbalance.data.base import ClipDataset
from modbalance.data.errors import DataFileError
from modbalance.data.kinetics_sounds import KS_CLASSES
from modbalance.prep import prepare
from modbalance.runfolder import read_metrics
from modbalance.train import ConfigError, load_config, run

pytestmark = pytest.mark.slow

#: Overrides that make any shipped config a seconds-long CPU run (the encoders stay as shipped).
TINY = [
    "train.epochs=1",
    "train.batch_size=2",
    "train.eval_batch_size=8",
    "train.num_workers=0",
    "train.progress=false",
]


# ----------------------------------------------------------------------------------------------- raw fixtures
def write_clip(path: Path, seconds: float, *, seed: int, hz: float = 440.0, audio: bool = True) -> None:
    """A 64 x 48 video at 10 fps: noise background and a bright square that moves right; a tone as audio."""
    rng = np.random.default_rng(seed)
    count = int(seconds * 10)
    frames = np.repeat(rng.integers(0, 90, (1, 48, 64, 3)).astype(np.uint8), count, axis=0)
    for k in range(count):
        left = (4 + 2 * k) % 44
        frames[k, 14:34, left : left + 16] = 230
    t = np.arange(int(seconds * 16000)) / 16000
    wave = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32) if audio else None
    path.parent.mkdir(parents=True, exist_ok=True)
    media.write_video(path, frames, 10, audio=wave, sample_rate=16000)


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def cremad_raw(root: Path, *, val: bool = False) -> Path:
    """The toy release in the CREMA-D layout: 12 clips, 6 listed in train.csv, 6 in test.csv (+ val.csv)."""
    raw = make_av_toy_release(root, per_class=2, test_fraction=0.5)
    if val:  # the Diagnosing val.csv: two train clips, moved out of train by prep
        names = [row.split(",")[0] for row in (raw / "train.csv").read_text("utf-8-sig").splitlines()]
        write_lines(raw / "val.csv", ["name,label"] + [f"{n},{n.split('_')[2]}" for n in names[:2]])
    return raw


def ks_raw(root: Path) -> Path:
    """Kinetics-style videos in sub-folders and the OGM-GE lists (name,10,label-index)."""
    train = {"aaa_000010_000020": 0, "bbb_000030_000040": 30, "ccc_000000_000010": 12, "ddd_000005_000015": 3}
    test = {"eee_2": 25, "fff_7": 7}
    for k, name in enumerate([*train, *test]):
        write_clip(root / "videos" / KS_CLASSES[{**train, **test}[name]] / f"{name}.mp4", 3.2, seed=k)
    write_lines(root / "my_train.txt", [f"{n},10,{label}" for n, label in train.items()])
    write_lines(root / "my_test.txt", [f"{n},10,{label}" for n, label in test.items()])
    return root


def vggsound_raw(root: Path) -> Path:
    """vggsound.csv (ytid,start,label,split) and <ytid>_<start:06d>.mp4 videos."""
    rows = [
        ("aaaaaaaaaaa", 10, "dog barking", "train"),
        ("bbbbbbbbbbb", 0, "cat purring", "train"),
        ("ccccccccccc", 30, "dog barking", "train"),
        ("ddddddddddd", 5, "cat purring", "train"),
        ("eeeeeeeeeee", 20, "dog barking", "test"),
        ("fffffffffff", 40, "cat purring", "test"),
    ]
    write_lines(root / "vggsound.csv", [f"{y},{s},{label},{split}" for y, s, label, split in rows])
    for k, (ytid, start, label, _) in enumerate(rows):
        write_clip(root / "video" / f"{ytid}_{start:06d}.mp4", 3.2, seed=k, hz=330 if "cat" in label else 660)
    return root


def ave_raw(root: Path) -> Path:
    """Annotations.txt and the &-separated train/val/test lists; AVE/<id>.mp4 videos."""
    rows = {
        "train": ["Church bell&t1&good&0&10", "Violin, fiddle&t2&good&0&10", "Church bell&t3&good&2&8"],
        "val": ["Violin, fiddle&v1&good&0&10", "Church bell&v2&good&0&10"],
        "test": ["Church bell&s1&good&0&10", "Violin, fiddle&s2&good&1&9"],
    }
    every = [row for split_rows in rows.values() for row in split_rows]
    write_lines(root / "Annotations.txt", ["Category&VideoID&Quality&StartTime&EndTime", *every])
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        write_lines(root / name, rows[split])
    for k, row in enumerate(every):
        write_clip(root / "AVE" / f"{row.split('&')[1]}.mp4", 3.2, seed=k)
    return root


def ucf101_raw(root: Path) -> Path:
    """UCF-101/<Class>/v_*.avi (no audio) and ucfTrainTestlist/ (split 1)."""
    classes = ["ApplyEyeMakeup", "Basketball"]
    train = [f"{c}/v_{c}_g0{g}_c01.avi" for c in classes for g in (1, 2)]
    test = [f"{c}/v_{c}_g08_c01.avi" for c in classes]
    for k, path in enumerate(train + test):
        write_clip(root / "UCF-101" / path, 3.2, seed=k, audio=False)
    lists = root / "ucfTrainTestlist"
    write_lines(lists / "classInd.txt", [f"{i + 1} {c}" for i, c in enumerate(classes)])
    write_lines(lists / "trainlist01.txt", [f"{p} {classes.index(p.split('/')[0]) + 1}" for p in train])
    write_lines(lists / "testlist01.txt", test)
    return root


def mosei_raw(root: Path) -> Path:
    """MulT's unaligned pickle, with short sequences (8 steps) to keep the Transformers cheap."""
    rng = np.random.default_rng(0)

    def split(scores: list[float]) -> dict[str, np.ndarray]:
        n = len(scores)
        return {
            "text": rng.normal(size=(n, 8, 300)),
            "audio": rng.normal(size=(n, 8, 74)).astype(np.float32),
            "vision": rng.normal(size=(n, 8, 35)),
            "labels": np.array(scores).reshape(n, 1, 1),
        }

    data = {"train": split([-2.0, 0.5, 1.5, -0.3, 2.5]), "valid": split([0.4, -1.0]), "test": split([-0.6, 2.2])}
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "mosei_senti_data_noalign.pkl", "wb") as handle:
        pickle.dump(data, handle)
    return root


#: dataset -> (raw builder, prep options, shipped config, overrides).
CASES = {
    "cremad": (cremad_raw, {}, "cremad/ogm_ge", ["data.options.image_size=64"]),
    "ks": (ks_raw, {"recipes": ("a3",)}, "ks/balancebench_opm", ["data.options.image_size=64"]),
    "vggsound": (vggsound_raw, {}, "vggsound/ogm_ge_joint", ["data.options.image_size=64"]),
    "ave": (ave_raw, {}, "ave/modbalance", ["data.options.image_size=64"]),
    "ucf101": (ucf101_raw, {}, "ucf101/modbalance_opm", ["data.options.image_size=64", "method.start_epoch=0"]),
    "mosei": (
        mosei_raw,
        {},
        "mosei/balancebench_opm",
        [
            f"model.encoders.{m}.options.{key}"
            for m in ("audio", "visual", "text")
            for key in ("d_model=16", "num_heads=2", "dim_feedforward=32")
        ],
    ),
}


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("dataset", list(CASES))
def test_raw_release_to_one_epoch_run_with_the_shipped_config(dataset: str, tmp_path: Path) -> None:
    build_raw, prep_options, config_name, overrides = CASES[dataset]
    raw = build_raw(tmp_path / "raw")
    manifest = prepare(dataset, raw, tmp_path / "prepared", **prep_options)
    assert manifest["counts"]["prepared"] >= 6 and manifest["skipped"] == []
    config = load_config(
        config_name, [f"data.root={tmp_path / 'prepared'}", f"output_dir={tmp_path / 'runs'}", *TINY, *overrides]
    )
    folder = run(config)

    records = read_metrics(folder / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0]
    record = records[0]
    assert np.isfinite(record["train/loss"]) and 0.0 <= record["val/accuracy"] <= 1.0
    assert record["skipped/train"] == 0 and record["skipped/val"] == 0 and "skipped_samples" not in record
    summary = json.loads((folder / "summary.json").read_text())
    modalities = list(config.model.encoders)
    assert (summary["data"], summary["method"], summary["modalities"]) == (dataset, config.method.name, modalities)
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
    assert {f"accuracy/{m}" for m in modalities} <= set(summary["test"])
    assert summary["skipped"] == {"skipped/train": 0, "skipped/val": 0, "skipped/test": 0}
    saved = load_config(folder / "config.yaml")
    assert saved.data.options == config.data.options and saved.model.encoders == config.model.encoders


@pytest.fixture()
def cremad_prepared(tmp_path: Path) -> Path:
    """The toy CREMA-D release prepared with a val split: 4 train, 2 val, 6 test clips."""
    out = tmp_path / "prepared"
    prepare("cremad", cremad_raw(tmp_path / "raw", val=True), out)
    return out


def _corrupt_first_train_clip(root: Path) -> tuple[str, Path]:
    name = layout.split_file(root, "train").read_text().splitlines()[1].split(",")[0]
    path = layout.audio_file(root, "a1", name)
    path.write_bytes(b"\x93NUMPY garbage, not an array")
    return name, path


def _cremad_config(root: Path, out: Path, *extra: str):
    overrides = [f"data.root={root}", f"output_dir={out}", "data.val_fraction=0", "data.options.image_size=64"]
    return load_config("cremad/ogm_ge", [*overrides, *TINY, *extra])


def test_skipped_sample_is_counted_and_named_in_metrics_jsonl(cremad_prepared: Path, tmp_path: Path, caplog) -> None:
    name, path = _corrupt_first_train_clip(cremad_prepared)
    folder = run(_cremad_config(cremad_prepared, tmp_path / "runs", "data.options.on_error=skip"))
    record = read_metrics(folder / "metrics.jsonl")[0]
    assert record["skipped/train"] == 1 and record["skipped/val"] == 0  # read once in the epoch, then substituted
    (entry,) = record["skipped_samples"]
    assert entry["split"] == "train" and entry["name"] == name and entry["reason"] == "corrupt"
    assert str(path) in entry["message"]
    assert any(name in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert record["step"] == 2  # the 4 train clips still give 2 batches of 2: the bad one was replaced


def test_bad_file_under_on_error_raise_names_the_file(cremad_prepared: Path, tmp_path: Path) -> None:
    _, path = _corrupt_first_train_clip(cremad_prepared)
    with pytest.raises(DataFileError, match=re.escape(str(path))):
        run(_cremad_config(cremad_prepared, tmp_path / "runs"))


def test_train_draws_follow_the_epoch_and_held_out_validation_uses_eval_transforms(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "prepared"
    prepare("cremad", cremad_raw(tmp_path / "raw"), out)
    loads: list[tuple[str, bool, int, int]] = []
    original = ClipDataset.load

    def spy(self, index):
        loads.append((Path(self.source).stem, self.train, self.epoch, index))
        return original(self, index)

    monkeypatch.setattr(ClipDataset, "load", spy)
    config = load_config(
        "cremad/ogm_ge",
        [
            f"data.root={out}",
            f"output_dir={tmp_path / 'runs'}",
            "data.options.image_size=64",
            "data.val_fraction=0.34",
            "train.epochs=2",
            *TINY[1:],
        ],
    )
    run(config)
    train_reads = [(epoch, index) for split, train, epoch, index in loads if split == "train" and train]
    held_out_reads = {index for split, train, _, index in loads if split == "train" and not train}
    assert {epoch for epoch, _ in train_reads} == {0, 1}  # set_epoch reached the dataset before each epoch
    assert len(held_out_reads) == 2  # round(0.34 * 6) rows, read with train=False (deterministic transforms)
    assert held_out_reads.isdisjoint(index for _, index in train_reads)  # never trained on
    assert all(not train for split, train, _, _ in loads if split == "test")


def test_a_prepared_folder_without_a_val_list_points_to_val_fraction(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare("cremad", cremad_raw(tmp_path / "raw"), out)  # the OGM-GE lists: train and test only
    config = _cremad_config(out, tmp_path / "runs")  # data.val_fraction=0: read the val split
    message = f"data.val_split='val' cannot be read: {layout.split_file(out, 'val')}: file not found"
    with pytest.raises(ConfigError, match=re.escape(message) + r".*set data\.val_fraction"):
        run(config)
