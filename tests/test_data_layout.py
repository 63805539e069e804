"""BehaveNet's HDF5 layout: loading, masks, and every malformed input refused in one line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from psvae_opt.data import load_session, write_session
from psvae_opt.errors import DataError
from tests.conftest import one_line_error, random_frames


def write_raw(path: Path, images: dict, labels: dict, masks: dict | None = None) -> Path:
    """A file exactly as BehaveNet writes it: groups of per-trial datasets, nothing else."""
    with h5py.File(path, "w") as f:
        for group, data in (("images", images), ("labels", labels), ("labels_masks", masks)):
            if data is None:
                continue
            g = f.create_group(group)
            for name, arr in data.items():
                g.create_dataset(name, data=arr)
    return path


def good_trials(n_trials: int = 2, t: int = 5, n_labels: int = 3):
    images = {f"trial_{i:04d}": random_frames(t, seed=i) for i in range(n_trials)}
    labels = {f"trial_{i:04d}": np.random.default_rng(i).standard_normal((t, n_labels)) for i in range(n_trials)}
    return images, labels


def test_a_behavenet_file_loads_unchanged(tmp_path: Path):
    images, labels = good_trials(n_trials=12)
    s = load_session(write_raw(tmp_path / "bn.h5", images, labels))
    assert s.n_trials == 12 and s.n_frames == 60 and s.frame_shape == (1, 32, 32)
    assert s.trial_names[:3] == ("trial_0000", "trial_0001", "trial_0002")
    np.testing.assert_array_equal(s.images[5:10], images["trial_0001"])
    np.testing.assert_allclose(s.labels[5:10], labels["trial_0001"], rtol=1e-6)
    assert s.masks.min() == 1.0 and s.masked_fraction == 0.0
    assert s.label_names == ("label_0", "label_1", "label_2")
    assert s.factors is None and s.labels_sc is None


def test_trials_are_ordered_by_number_not_by_text(tmp_path: Path):
    images, labels = good_trials(n_trials=3)
    rename = {"trial_0000": "trial_10", "trial_0001": "trial_9", "trial_0002": "trial_100"}
    s = load_session(
        write_raw(
            tmp_path / "f.h5", {rename[k]: v for k, v in images.items()}, {rename[k]: v for k, v in labels.items()}
        )
    )
    assert s.trial_names == ("trial_9", "trial_10", "trial_100")
    np.testing.assert_array_equal(s.images[:5], images["trial_0001"])


def test_masked_entries_are_zero_and_may_hold_nan(tmp_path: Path):
    images, labels = good_trials()
    masks = {k: np.ones_like(v) for k, v in labels.items()}
    labels["trial_0000"][1, 2] = np.nan
    masks["trial_0000"][1, 2] = 0
    masks["trial_0001"][0, :] = 0
    s = load_session(write_raw(tmp_path / "m.h5", images, labels, masks))
    assert s.labels[1, 2] == 0.0 and s.masks[1, 2] == 0.0
    np.testing.assert_array_equal(s.labels[5], 0.0)
    assert s.masked_fraction == pytest.approx(4 / 30)


def test_write_then_load_keeps_every_group(tmp_path: Path):
    imgs = [random_frames(4, (2, 32, 32), seed=i) for i in range(3)]
    labs = [np.full((4, 2), float(i)) for i in range(3)]
    masks = [np.ones((4, 2)) for _ in range(3)]
    masks[1][2, 0] = 0
    path = write_session(
        tmp_path / "w.h5",
        imgs,
        labs,
        masks=masks,
        labels_sc=labs,
        factors=[np.ones((4, 3))] * 3,
        factor_names=["a", "b", "c"],
        factor_labeled=[True, False, False],
        label_names=["x", "y"],
        attrs={"frame_rate": 250.0},
    )
    s = load_session(path)
    assert s.label_names == ("x", "y") and s.factor_names == ("a", "b", "c")
    assert s.factor_labeled == (True, False, False)
    assert s.labels[6, 0] == 0.0 and s.labels[6, 1] == 1.0  # masked entry written as 0
    assert s.attrs["frame_rate"] == 250.0 and s.frame_shape == (2, 32, 32)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


# -- malformed inputs: each through `psvae-opt data check`, one line, exit code 1 -------------


def _malformed(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.h5"
    images, labels = good_trials()
    if kind == "no_images":
        write_raw(path, {}, labels)
        with h5py.File(path, "a") as f:
            del f["images"]
    elif kind == "no_labels":
        write_raw(path, images, {})
        with h5py.File(path, "a") as f:
            del f["labels"]
    elif kind == "trial_sets_differ":
        labels["trial_0007"] = labels.pop("trial_0001")
        write_raw(path, images, labels)
    elif kind == "lengths_differ":
        labels["trial_0001"] = labels["trial_0001"][:4]
        write_raw(path, images, labels)
    elif kind == "nan_without_mask":
        labels["trial_0001"][2, 1] = np.nan
        write_raw(path, images, labels)
    elif kind == "inf_where_valid":
        labels["trial_0001"][2, 1] = np.inf
        write_raw(path, images, labels, {k: np.ones_like(v) for k, v in labels.items()})
    elif kind == "float_images":
        images["trial_0000"] = images["trial_0000"].astype(np.float32)
        write_raw(path, images, labels)
    elif kind == "rank3_images":
        images = {k: v[:, 0] for k, v in images.items()}
        write_raw(path, images, labels)
    elif kind == "empty_groups_file":
        h5py.File(path, "w").close()
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "not_hdf5":
        path.write_text("trial,x,y\n0,1,2\n")
    elif kind == "tiny_frames":
        write_raw(path, {k: v[:, :, :3, :3] for k, v in images.items()}, labels)
    elif kind == "trial_is_a_group":
        write_raw(path, images, labels)
        with h5py.File(path, "a") as f:
            del f["images/trial_0001"]
            f["images"].create_group("trial_0001")
    elif kind == "masks_not_a_group":
        write_raw(path, images, labels)
        with h5py.File(path, "a") as f:
            f.create_dataset("labels_masks", data=np.ones(3))
    elif kind == "no_channels":
        write_raw(path, {k: v[:, :0] for k, v in images.items()}, labels)
    elif kind == "complex_labels":
        write_raw(path, images, {k: v.astype(np.complex64) for k, v in labels.items()})
    elif kind == "text_masks":
        write_raw(path, images, labels, {k: np.full(v.shape, b"1") for k, v in labels.items()})
    elif kind == "missing":
        pass
    return path


MALFORMED = {
    "no_images": r"no `images` group; the file needs groups `images` and `labels`",
    "no_labels": r"no `labels` group",
    "trial_sets_differ": (
        r"trials of `images` and `labels` differ \(only in images: trial_0001; only in labels: trial_0007\)"
    ),
    "lengths_differ": r"images/trial_0001 has 5 frames but labels/trial_0001 has 4; cut both to the same length",
    "nan_without_mask": r"labels/trial_0001 has 1 NaN or inf values and the file has no `labels_masks` group",
    "inf_where_valid": r"labels/trial_0001 has 1 NaN or inf values where labels_masks/trial_0001 is 1",
    "float_images": r"images/trial_0000 is float32, expected uint8 \(T, C, H, W\)",
    "rank3_images": r"images/trial_0000 has shape \(5, 32, 32\), expected 4 dimensions \(T, C, H, W\)",
    "empty_groups_file": r"empty file \(no groups\)",
    "zero_bytes": r"empty file \(0 bytes\)",
    "not_hdf5": r"not an HDF5 file",
    "tiny_frames": r"frames of 3x3 pixels are smaller than the 5x5 convolution kernel",
    "missing": r"file not found",
    "trial_is_a_group": r"images/trial_0001 is a group, not a dataset",
    "masks_not_a_group": r"labels_masks is a dataset, not a group",
    "no_channels": r"images/trial_0000 has frames of shape \(0, 32, 32\); \(C, H, W\) must all be at least 1",
    "complex_labels": r"labels/trial_0000 is complex64, expected floating-point labels",
    "text_masks": r"labels_masks has no numeric dataset trial_0000; add one 0/1 mask per trial",
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_input_is_refused_in_one_line(tmp_path: Path, cli, kind: str):
    path = _malformed(tmp_path, kind)
    line = one_line_error(cli("data", "check", path))
    assert str(path) in line
    import re

    assert re.search(MALFORMED[kind], line), line
    assert cli("data", "check", path).code == 1


def test_loading_malformed_input_raises_data_error(tmp_path: Path):
    with pytest.raises(DataError):
        load_session(_malformed(tmp_path, "lengths_differ"))


def test_a_foreign_factors_node_is_ignored(tmp_path: Path):
    """`factors` is psvae-opt's own optional group: another tool's node of that name is no error."""
    path = tmp_path / "f.h5"
    images, labels = good_trials()
    write_raw(path, images, labels)
    with h5py.File(path, "a") as f:
        f.create_dataset("factors", data=np.arange(4.0))
    s = load_session(path)
    assert s.factors is None and s.n_frames == sum(len(v) for v in images.values())


def test_a_file_too_short_for_the_split_is_checked_with_a_warning(tmp_path: Path, cli):
    path = tmp_path / "short.h5"
    images, labels = good_trials(n_trials=3)  # fewer than one 8;1;1;0 block
    write_raw(path, images, labels)
    r = cli("data", "check", path)
    assert r.code == 0, r.err
    assert "split 8;1;1;0  warning: 3 trials cannot fill one split block of 10 trials" in r.out
    assert "trials        3" in r.out
