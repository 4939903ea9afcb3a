"""Reading samples from every supported file format, with column selection and clear errors."""

import numpy as np
import pytest

from nplm_kernel import InputError
from nplm_kernel.io import load_events


@pytest.fixture
def events(rng):
    return rng.normal(size=(50, 3))


def _write_all_formats(directory, events):
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq
    import uproot

    names = ["pt", "eta", "phi"]
    np.save(directory / "plain.npy", events)
    np.savez(directory / "two.npz", x=events, other=np.zeros(3))
    structured = np.zeros(len(events), dtype=[(name, "f8") for name in names])
    for j, name in enumerate(names):
        structured[name] = events[:, j]
    np.save(directory / "structured.npy", structured)
    with h5py.File(directory / "sample.h5", "w") as handle:
        handle["matrix"] = events
        group = handle.create_group("muons")
        for j, name in enumerate(names):
            group[name] = events[:, j]
    pq.write_table(pa.table({name: events[:, j] for j, name in enumerate(names)}), directory / "sample.parquet")
    with uproot.recreate(directory / "sample.root") as handle:
        tree = handle.mktree("Events", {name: "f8" for name in names})
        tree.extend({name: events[:, j] for j, name in enumerate(names)})
    with uproot.recreate(directory / "ntuple.root") as handle:
        handle["Events"] = {name: events[:, j] for j, name in enumerate(names)}  # an RNTuple in uproot 5.7


def test_every_format_reads_back_the_selected_columns(tmp_path, events):
    _write_all_formats(tmp_path, events)
    selected = events[:, [2, 0]]
    np.testing.assert_array_equal(load_events(tmp_path / "plain.npy"), events)
    np.testing.assert_array_equal(load_events(tmp_path / "plain.npy", columns=["2", "0"]), selected)
    np.testing.assert_array_equal(load_events(tmp_path / "two.npz", key="x", columns=[2, 0]), selected)
    np.testing.assert_array_equal(load_events(tmp_path / "structured.npy", columns=["phi", "pt"]), selected)
    np.testing.assert_array_equal(load_events(tmp_path / "sample.h5", key="matrix"), events)
    np.testing.assert_array_equal(load_events(tmp_path / "sample.h5", key="muons", columns=["phi", "pt"]), selected)
    np.testing.assert_array_equal(load_events(tmp_path / "sample.parquet", columns=["phi", "pt"]), selected)
    np.testing.assert_array_equal(load_events(tmp_path / "sample.root", columns=["phi", "pt"]), selected)
    np.testing.assert_array_equal(load_events(tmp_path / "sample.root", key="Events"), events)
    np.testing.assert_array_equal(load_events(tmp_path / "ntuple.root", columns=["phi", "pt"]), selected)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("missing.npy", {}, "file not found"),
        ("sample.parquet", {"columns": ["pt", "mass"]}, r"no column 'mass'; available: pt, eta, phi"),
        ("sample.root", {"columns": ["ptt"]}, r"no branch in tree 'Events': 'ptt'"),
        ("sample.root", {"key": "Tree"}, r"no tree 'Tree'; available: Events"),
        ("sample.h5", {}, r"holds \['matrix', 'muons'\]; say which dataset or group with key="),
        ("sample.h5", {"key": "muons", "columns": ["eta", "e"]}, r"no dataset in group 'muons': 'e'"),
        ("two.npz", {}, r"holds arrays \['x', 'other'\]; say which one with key="),
        ("plain.npy", {"columns": ["pt"]}, "a plain array has no column names"),
        ("plain.npy", {"columns": [5]}, r"column index\(es\) \[5\] out of range"),
    ],
)
def test_bad_files_and_columns_are_named(tmp_path, events, name, options, match):
    _write_all_formats(tmp_path, events)
    with pytest.raises(InputError, match=match):
        load_events(tmp_path / name, **options)


def test_unknown_format_and_unreadable_and_non_finite_files(tmp_path, events):
    (tmp_path / "sample.csv").write_text("1,2\n")
    with pytest.raises(InputError, match=r"unknown file type '.csv'; supported: .h5, .hdf5, .npy"):
        load_events(tmp_path / "sample.csv")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="broken.npy: cannot be read as numpy"):
        load_events(tmp_path / "broken.npy")
    events[4, 1] = np.inf
    np.save(tmp_path / "bad.npy", events)
    with pytest.raises(InputError, match="bad.npy contains 1 non-finite value.*row 4"):
        load_events(tmp_path / "bad.npy")


def test_root_jagged_branches_expressions_and_selections(tmp_path):
    import awkward as ak
    import uproot

    muons = ak.Array([[30.0, 20.0], [50.0], [], [25.0, 22.0, 10.0]])
    with uproot.recreate(tmp_path / "muons.root") as handle:
        tree = handle.mktree("Events", {"Muon_pt": "var * float64", "met": "f8"})
        tree.extend({"Muon_pt": muons, "met": np.array([10.0, 20.0, 30.0, 40.0])})
    path = tmp_path / "muons.root"
    with pytest.raises(InputError, match=r"branch 'Muon_pt' is jagged .* 'Muon_pt\[:, 0\]'"):
        load_events(path, columns=["Muon_pt", "met"])
    leading = load_events(path, columns=["Muon_pt[:, 0]", "met"], selection="nMuon_pt >= 1")
    np.testing.assert_array_equal(leading, [[30.0, 10.0], [50.0, 20.0], [25.0, 40.0]])
    second = load_events(path, columns=["Muon_pt[:, 1]"], selection="(nMuon_pt >= 2) & (met > 15)")
    np.testing.assert_array_equal(second, [[22.0]])
    with pytest.raises(InputError, match=r"needs every selected event to hold k \+ 1 values"):
        load_events(path, columns=["Muon_pt[:, 0]"])  # the third event has no muon
    np.save(tmp_path / "plain.npy", np.zeros((3, 1)))
    with pytest.raises(InputError, match="a selection string needs ROOT input"):
        load_events(tmp_path / "plain.npy", selection="x > 0")


def test_columns_with_expressions_split_on_the_cli():
    from nplm_kernel.cli.options import columns as _columns

    assert _columns("Muon_pt[:, 0], met,Muon_eta[:,1]") == ["Muon_pt[:, 0]", "met", "Muon_eta[:,1]"]
