"""The generic feature-table dataset (``data.name: features``): formats, labels, splits, standardisation, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from modbalance.data.errors import DataFileError, MissingFileError
from modbalance.data.features import FeatureTables, read_table, stratified_split
from modbalance.data.registry import build_dataset, dataset_info

N = 30  # 3 classes x 10 rows


def _tables(root: Path) -> dict[str, np.ndarray]:
    """Three views in three formats (.npy, .npz with two arrays, .csv with a header), labels and a split."""
    rng = np.random.default_rng(1)
    a = rng.normal(loc=5.0, scale=3.0, size=(N, 4))
    b = rng.normal(size=(N, 2, 3))
    c = rng.integers(0, 100, size=(N, 3)).astype(float)
    labels = np.array(["cat", "dog", "emu"])[np.arange(N) % 3]
    split = np.array(["train"] * 18 + ["val"] * 6 + ["test"] * 6)
    np.save(root / "a.npy", a)
    np.savez(root / "b.npz", emb=b, other=np.zeros(3))
    lines = ["x,y,z,label"] + [f"{r[0]:g},{r[1]:g},{r[2]:g},{y}" for r, y in zip(c, labels, strict=True)]
    (root / "c.csv").write_text("\n".join(lines) + "\n")
    (root / "labels.csv").write_text("id,label\n" + "".join(f"{i},{y}\n" for i, y in enumerate(labels)))
    np.save(root / "split.npy", split)
    return {"a": a, "b": b, "c": c, "labels": labels, "split": split}


OPTIONS = {"views": {"a": "a.npy", "b": "b.npz:emb", "c": "c.csv"}, "label_column": "label", "splits": "split.npy"}


def test_npy_npz_csv_views_give_the_written_rows_of_each_split(tmp_path: Path) -> None:
    written = _tables(tmp_path)
    for split, rows in (("train", slice(0, 18)), ("val", slice(18, 24)), ("test", slice(24, 30))):
        data = FeatureTables(tmp_path, split, standardize=False, **OPTIONS)
        np.testing.assert_allclose(data.features["a"].numpy(), written["a"][rows], rtol=1e-6)
        np.testing.assert_allclose(data.features["b"].numpy(), written["b"][rows], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(data.features["c"].numpy(), written["c"][rows])  # the label column is gone
        names = [data.classes[t] for t in data.targets.tolist()]
        assert names == written["labels"][rows].tolist() and data.classes == ("cat", "dog", "emu")


def test_a_label_file_column_and_the_label_column_agree(tmp_path: Path) -> None:
    _tables(tmp_path)
    from_file = FeatureTables(tmp_path, "train", views={"a": "a.npy"}, labels="labels.csv:label", splits="split.npy")
    from_column = FeatureTables(tmp_path, "train", **OPTIONS)
    assert from_file.targets.equal(from_column.targets)


def test_standardisation_uses_the_training_rows_only(tmp_path: Path) -> None:
    written = _tables(tmp_path)
    train_a = written["a"][:18]
    mean, std = train_a.mean(0), train_a.std(0)  # the oracle: NumPy on the rows the split file marks train
    test = FeatureTables(tmp_path, "test", **OPTIONS)
    np.testing.assert_allclose(test.features["a"].numpy(), (written["a"][24:] - mean) / std, rtol=1e-5, atol=1e-5)
    train = FeatureTables(tmp_path, "train", **OPTIONS)
    np.testing.assert_allclose(train.features["a"].mean(0).numpy(), 0.0, atol=1e-5)
    # Moving a test row far away leaves the training features unchanged.
    shifted = written["a"].copy()
    shifted[25] += 1e4
    np.save(tmp_path / "a.npy", shifted)
    assert FeatureTables(tmp_path, "train", **OPTIONS).features["a"].equal(train.features["a"])


def test_a_batch_by_index_tensor_equals_the_stacked_samples(tmp_path: Path) -> None:
    _tables(tmp_path)
    data = FeatureTables(tmp_path, "train", **OPTIONS)
    assert data.batched is True
    index = torch.tensor([3, 0, 7])
    inputs, target = data[index]
    for m in ("a", "b", "c"):
        assert inputs[m].equal(torch.stack([data[int(i)][0][m] for i in index]))
    assert target.tolist() == [data[int(i)][1] for i in index]


def test_hdf5_views_and_the_registry(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    written = _tables(tmp_path)
    with h5py.File(tmp_path / "feats.h5", "w") as handle:
        handle["a"] = written["a"]
    options = {**OPTIONS, "views": {"a": "feats.h5:a", "c": "c.csv"}}
    data = build_dataset("features", tmp_path, "val", standardize=False, **options)
    assert isinstance(data, FeatureTables)
    np.testing.assert_allclose(data.features["a"].numpy(), written["a"][18:24], rtol=1e-6)
    info = dataset_info("features", tmp_path, **options)
    assert (info.modalities, info.classes, info.num_classes) == (("a", "c"), ("cat", "dog", "emu"), 3)
    assert dataset_info("features", views={"x": "x.npy"}, modalities="x").modalities == ("x",)


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        (tmp_path / "v.parquet").write_bytes(b"PAR1")
        with pytest.raises(ImportError, match=re.escape('pip install "modbalance[parquet]"')):
            read_table(tmp_path / "v.parquet")
    else:
        pytest.skip("pyarrow is installed")


def test_without_a_split_file_a_seeded_stratified_split_is_drawn(tmp_path: Path) -> None:
    _tables(tmp_path)
    options = {**OPTIONS, "splits": None, "val_share": 0.2, "test_share": 0.2}
    parts = {s: FeatureTables(tmp_path, s, split_seed=5, **options) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [18, 6, 6]
    for s in ("val", "test"):
        assert torch.bincount(parts[s].targets).tolist() == [2, 2, 2]
    rows = [set(parts[s].rows.tolist()) for s in parts]
    assert set.union(*rows) == set(range(N)) and sum(len(r) for r in rows) == N
    assert (stratified_split(np.arange(N) % 3, seed=5) == stratified_split(np.arange(N) % 3, seed=5)).all()
    assert (stratified_split(np.arange(N) % 3, seed=5) != stratified_split(np.arange(N) % 3, seed=6)).any()


def test_a_view_with_another_row_count_names_the_file_the_modality_and_both_counts(tmp_path: Path) -> None:
    written = _tables(tmp_path)
    np.save(tmp_path / "a.npy", written["a"][:-2])
    views = {"c": "c.csv", "a": "a.npy"}
    with pytest.raises(DataFileError, match=r"a\.npy: modality 'a' has 28 rows, but modality 'c' \(.*c\.csv\) has 30"):
        FeatureTables(tmp_path, "train", **{**OPTIONS, "views": views})


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    _tables(tmp_path)
    with pytest.raises(MissingFileError, match=r"missing\.npy: file not found \(modality 'd'\)"):
        FeatureTables(tmp_path, "train", **{**OPTIONS, "views": {"a": "a.npy", "d": "missing.npy"}})
    lines = (tmp_path / "c.csv").read_text().splitlines()
    lines[3] = "seven," + lines[3].split(",", 1)[1]
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DataFileError, match=r"c\.csv: modality 'c': line 4, feature column 0: non-numeric cell 'seven'"
    ):
        FeatureTables(tmp_path, "train", **OPTIONS)
    with pytest.raises(DataFileError, match=r"b\.npz: holds 2 arrays \(emb, other\); name one as 'b\.npz:<array>'"):
        FeatureTables(tmp_path, "train", **{**OPTIONS, "views": {"b": "b.npz"}})
    with pytest.raises(DataFileError, match=r"row 0: label 'cat' is not a class \(classes: dog, emu\)"):
        FeatureTables(tmp_path, "train", views={"a": "a.npy"}, labels="labels.csv:label", classes="dog,emu")
    np.save(tmp_path / "bad_split.npy", np.array(["train"] * 29 + ["holdout"]))
    with pytest.raises(DataFileError, match=r"bad_split\.npy: row 29: split 'holdout' is not one of train, val, test"):
        FeatureTables(tmp_path, "train", views={"a": "a.npy"}, labels="labels.csv:label", splits="bad_split.npy")
    np.save(tmp_path / "short_split.npy", np.array(["train"] * 29))
    with pytest.raises(DataFileError, match=r"29 split assignments, but modality 'a' \(.*a\.npy\) has 30 rows"):
        FeatureTables(tmp_path, "train", views={"a": "a.npy"}, labels="labels.csv:label", splits="short_split.npy")
    np.save(tmp_path / "words.npy", np.array([["a"]] * 30))
    with pytest.raises(DataFileError, match=r"words\.npy: modality 'w': <U1 values, expected numbers"):
        FeatureTables(tmp_path, "train", views={"w": "words.npy"}, labels="labels.csv:label")
    with pytest.raises(ValueError, match="give 'labels'"):
        FeatureTables(tmp_path, "train", views={"a": "a.npy"})


def test_parquet_views_with_a_label_column(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    written = _tables(tmp_path)
    columns = {"x": written["c"][:, 0], "y": written["c"][:, 1], "z": written["c"][:, 2], "label": written["labels"]}
    pq.write_table(pa.table(columns), tmp_path / "c.parquet")
    options = {**OPTIONS, "views": {"c": "c.parquet"}}
    data = FeatureTables(tmp_path, "train", standardize=False, **options)
    np.testing.assert_allclose(data.features["c"].numpy(), written["c"][:18])
    assert [data.classes[t] for t in data.targets.tolist()] == written["labels"][:18].tolist()
