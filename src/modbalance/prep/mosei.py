"""CMU-MOSEI: MulT's pickle -> ``{train,val,test}.npz`` (validated, non-finite features set to 0).

Raw layout: ``<raw>/mosei_senti_data_noalign.pkl`` (default) or ``<raw>/mosei_senti_data.pkl``
(``--aligned``), from the ``yaohungt/Multimodal-Transformer`` README. The pickle is unpickled: only
use a file you trust. There is nothing per clip to decode, so ``prep mosei`` runs in this process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from modbalance.data import layout as lay
from modbalance.data import media
from modbalance.data._deps import require
from modbalance.data.errors import DataFileError
from modbalance.data.mosei import MOSEI_DIMS, MOSEI_PICKLE_KEYS, MULT_SPLITS, check_split_arrays, load_mult_pickle
from modbalance.prep.core import skip_entry


def prepare_mosei(raw: Path, out: Path, aligned: bool = False) -> dict[str, Any]:
    """Convert the MulT pickle into one ``.npz`` per split and write the manifest.

    Splits whose arrays are malformed are skipped and recorded; samples with a non-finite score are
    recorded and left out.

    Raises:
        FileNotFoundError: the pickle is missing.
        DataFileError: it cannot be unpickled.
    """
    np = require("numpy")
    started = time.time()
    path = Path(raw) / ("mosei_senti_data.pkl" if aligned else "mosei_senti_data_noalign.pkl")
    data = load_mult_pickle(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[dict[str, Any]] = []
    counts: dict[str, Any] = {}
    for split, key in MULT_SPLITS.items():
        if key not in data:
            skipped.append(skip_entry(None, "empty", f"{path}: no split {key!r}", split=split, file=str(path)))
            continue
        raw_split = data[key]
        arrays = {m: raw_split[MOSEI_PICKLE_KEYS[m]] for m in MOSEI_DIMS if MOSEI_PICKLE_KEYS[m] in raw_split}
        if "labels" in raw_split:
            arrays["scores"] = raw_split["labels"]
        try:
            if "scores" not in arrays:
                raise DataFileError(path, f"split {key!r} has no 'labels' array", reason="bad_shape")
            features, scores, nonfinite = check_split_arrays(arrays, f"{path}[{key}]")
        except DataFileError as error:
            skipped.append(skip_entry(None, error.reason, str(error), split=split, file=str(path)))
            continue
        finite = np.isfinite(scores.numpy())
        for index in np.nonzero(~finite)[0].tolist():
            skipped.append(
                skip_entry(
                    str(index),
                    "corrupt",
                    f"{path}[{key}] sample {index}: non-finite score",
                    split=split,
                    file=str(path),
                )
            )
        keep = np.nonzero(finite)[0]
        target = out / f"{split}.npz"
        with media._atomic_path(target) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, scores=scores.numpy()[keep], **{m: t.numpy()[keep] for m, t in features.items()})
        counts[split] = {
            "samples": int(keep.size),
            "lengths": {m: int(t.shape[1]) for m, t in features.items()},
            "nonfinite_features_set_to_zero": nonfinite,
            "negative": int((scores.numpy()[keep] < 0).sum()),
            "zero": int((scores.numpy()[keep] == 0).sum()),
        }
    (out / lay.CLASSES).write_text("negative\npositive\n", encoding="utf-8")
    manifest = {
        "dataset": "mosei",
        "format": "modbalance-prepared-v1",
        "raw": str(raw),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 3),
        "parameters": {"aligned": aligned, "source": path.name},
        "classes": ["negative", "positive"],
        "label_rule": "binary: 0 if score < 0 else 1 (zero counts as positive, as BalanceBench)",
        "counts": {
            "prepared": sum(c["samples"] for c in counts.values()),
            "splits": counts,
            "skipped": len(skipped),
            "clips": sum(c["samples"] for c in counts.values()) + len(skipped),
            "already_done": 0,
            "failed": len(skipped),
        },
        "skipped": skipped,
    }
    with media._atomic_path(out / lay.MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest
