"""Campaign integrity: a toy store knows what it is a null of, has one writer, refuses damage it
cannot explain, and a campaign survives failing toys, dying workers and a killed parent."""

import dataclasses
import errno
import functools
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from campaign_helpers import BENCHMARK, DyingGenerator, RaisingGenerator, small_campaign_inputs

from nplm_kernel import ConfigurationError, InputError, KernelNPLM
from nplm_kernel.benchmarks import NP2
from nplm_kernel.cli import main
from nplm_kernel.core.identity import describe
from nplm_kernel.inference import NPLMTest
from nplm_kernel.nuisance import NormalizationNuisance, NuisanceModel
from nplm_kernel.store import (
    CampaignMismatchError,
    StoreConflictError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    check_store,
    read_store,
    repair_store,
)
from nplm_kernel.toys import CampaignResult, ExecutorError, run_toys

HELPER = Path(__file__).with_name("campaign_helpers.py")
ENVIRONMENT = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPER.parent.parent), str(HELPER.parent)])}


@pytest.fixture(scope="module")
def inputs():
    return small_campaign_inputs()


@pytest.fixture
def filled_store(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    store = tmp_path / "null.jsonl"
    run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=5, seed=1, executor=None, store=store, progress=False)
    return store


def test_resuming_with_another_setting_is_refused_naming_the_field_and_leaving_the_store(inputs, filled_store):
    _, x_ref, w_ref = inputs
    before = filled_store.read_bytes()
    other_penalty = NPLMTest(KernelNPLM(n_centers=30, penalty=1e-3), width_quantiles=None)
    with pytest.raises(CampaignMismatchError) as error:
        run_toys(other_penalty, BENCHMARK.data, x_ref, w_ref, n_toys=8, seed=1, executor=None, store=filled_store,
                 progress=False)
    assert "test.backend.hyperparameters.penalty: the store has 1e-06, this run has 0.001" in str(error.value)
    assert str(filled_store) in str(error.value)
    signal_toys = functools.partial(BENCHMARK.data, signal=NP2)  # signal-injected toys: another distribution
    with pytest.raises(CampaignMismatchError, match=r"generator\.keywords\.signal"):
        run_toys(small_campaign_inputs()[0], signal_toys, x_ref, w_ref, n_toys=8, seed=1, executor=None,
                 store=filled_store, progress=False)
    with pytest.raises(CampaignMismatchError, match=r"test\.reference\.blake2b"):
        run_toys(small_campaign_inputs()[0], BENCHMARK.data, x_ref[:-1], w_ref[:-1], n_toys=8, seed=1, executor=None,
                 store=filled_store, progress=False)
    assert filled_store.read_bytes() == before
    # the device is an execution setting: the same campaign
    same = NPLMTest(KernelNPLM(n_centers=30, device="cpu", memory_budget=10**6), width_quantiles=None)
    assert len(run_toys(same, BENCHMARK.data, x_ref, w_ref, n_toys=6, seed=1, executor=None, store=filled_store,
                        progress=False).t) == 6


def test_a_store_written_when_the_backend_lived_in_another_module_resumes(inputs, filled_store):
    """Stores name the backend by its public name; one written by an earlier version under a
    former module path is the same campaign and resumes, while another class is still refused."""
    _, x_ref, w_ref = inputs
    header, *rows = filled_store.read_text().splitlines(keepends=True)
    assert '"class":"nplm_kernel.KernelNPLM"' in header
    filled_store.write_text(header.replace("nplm_kernel.KernelNPLM", "nplm_kernel.estimator.KernelNPLM") + "".join(rows))
    resumed = run_toys(inputs[0], BENCHMARK.data, x_ref, w_ref, n_toys=7, seed=1, executor=None, store=filled_store,
                       progress=False)
    assert len(resumed.t) == 7
    filled_store.write_text(header.replace("nplm_kernel.KernelNPLM", "nn_baseline.NNNPLM") + "".join(rows))
    with pytest.raises(CampaignMismatchError, match=r"test\.backend\.class: the store has 'nn_baseline\.NNNPLM'"):
        run_toys(inputs[0], BENCHMARK.data, x_ref, w_ref, n_toys=7, seed=1, executor=None, store=filled_store,
                 progress=False)


def test_readers_check_what_the_store_is_a_null_of(inputs, filled_store, capsys):
    test, x_ref, w_ref = inputs
    assert len(CampaignResult.from_store(filled_store, test, x_ref, w_ref).t) == 5
    with pytest.raises(CampaignMismatchError, match="n_centers: the store has 30, this run has 40"):
        CampaignResult.from_store(filled_store, NPLMTest(KernelNPLM(n_centers=40), width_quantiles=None), x_ref, w_ref)
    assert main(["calibrate", "--store", str(filled_store) + ".typo"]) == 2
    assert "toy store not found" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_writer_is_refused_with_the_holders_pid(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    store = tmp_path / "shared.jsonl"
    writer = subprocess.Popen([sys.executable, str(HELPER), str(store), "40"], env=ENVIRONMENT)
    try:
        deadline = time.monotonic() + 120
        while not store.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(StoreLockedError, match=f"pid {writer.pid}"):
            run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=40, seed=5, executor=None, store=store,
                     progress=False, generator_name="slow background")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    rows = [json.loads(line) for line in store.read_text().splitlines()[1:]]
    assert len(rows) == len({row["toy"] for row in rows})  # nobody wrote a toy twice


def test_a_damaged_middle_line_is_reported_with_file_and_line_then_repaired(filled_store, capsys):
    lines = filled_store.read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # a torn line in the middle
    lines.insert(4, json.dumps({"record": "toy", "seed": 1}))  # valid JSON, not a toy row
    filled_store.write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreCorruptError, match=rf"{filled_store}, line 3: not valid JSON .* 1 more bad line"):
        read_store(filled_store)
    assert gc.isenabled()  # the reader pauses the cyclic collector only while it parses
    assert main(["calibrate", "--store", str(filled_store)]) == 2
    assert "line 3: not valid JSON" in capsys.readouterr().err
    report = check_store(filled_store)
    assert [number for number, _ in report.bad_lines] == [3, 5] and "missing key(s) ['toy', 'status', 't']" in \
        report.bad_lines[1][1]
    assert main(["store", "check", str(filled_store)]) == 2  # a damaged store is an error
    assert "bad line:   5: missing key(s)" in capsys.readouterr().err
    assert main(["store", "repair", str(filled_store)]) == 0
    assert "moved to" in capsys.readouterr().out
    rejected = [json.loads(line) for line in filled_store.with_name("null.jsonl.rejected").read_text().splitlines()]
    assert [item["line"] for item in rejected] == [3, 5] and rejected[0]["text"] == lines[2]
    assert check_store(filled_store).healthy and len(read_store(filled_store).rows) == 4


def test_duplicate_rows_count_once_and_conflicting_rows_are_refused(filled_store):
    lines = filled_store.read_text().splitlines()
    filled_store.write_text("\n".join(lines + [lines[2]]) + "\n")  # the same toy written twice
    assert len(read_store(filled_store).rows) == 5 and check_store(filled_store).duplicates == 1
    changed = json.loads(lines[3])
    changed["t"] += 1.0
    filled_store.write_text("\n".join(lines + [json.dumps(changed)]) + "\n")
    with pytest.raises(StoreConflictError, match=rf"toy {changed['toy']} has two different results \(lines 4 and 7\)"):
        read_store(filled_store)
    _, side = repair_store(filled_store)
    assert json.loads(side.read_text())["line"] == 7 and len(read_store(filled_store).rows) == 5


def test_a_store_without_a_campaign_header_is_refused(tmp_path):
    legacy = tmp_path / "old.jsonl"
    legacy.write_text(json.dumps({"toy": 0, "seed": 0, "status": "ok", "t": 1.0}) + "\n")
    with pytest.raises(StoreError, match="earlier version"):
        read_store(legacy)


def test_a_generator_raising_valueerror_gives_failed_rows_and_the_campaign_goes_on(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    result = run_toys(test, RaisingGenerator(0.4), x_ref, w_ref, n_toys=8, seed=3, executor=None,
                      store=tmp_path / "s.jsonl", progress=False, max_failure_fraction=1.0)
    failed = [row for row in result.rows if row["status"] != "ok"]
    assert 1 <= len(failed) < 8 and len(result.t) == 8 - len(failed)
    for row in failed:
        assert row["error_type"] == "ValueError" and "cannot draw that toy" in row["status"]
        assert "RaisingGenerator" in row["traceback"] or "raise ValueError" in row["traceback"]
    assert len(read_store(tmp_path / "s.jsonl").rows) == 8


@pytest.mark.slow
def test_a_toy_that_kills_its_worker_is_run_alone_then_named_and_the_other_toys_are_kept(inputs, tmp_path):
    """A worker death is not a toy failure: the toys in flight run again, each alone in a fresh worker,
    and a toy that kills its worker every time stops the campaign with ExecutorError naming it."""
    test, x_ref, w_ref = inputs
    dying = [index for index in range(8)
             if np.random.default_rng(np.random.SeedSequence(4, spawn_key=(index,))).uniform() < 0.25]
    assert 1 <= len(dying) < 8
    store = tmp_path / "dying.jsonl"
    with pytest.raises(ExecutorError, match=rf"toy ({'|'.join(map(str, dying))}) was running alone in a fresh worker "
                                            "process each of the 2 times the worker died"):
        run_toys(test, DyingGenerator(0.25), x_ref, w_ref, n_toys=8, seed=4, executor=2, progress=False, store=store,
                 max_losses=1)
    rows = read_store(store).rows
    assert rows and all(row["status"] == "ok" and row["toy"] not in dying for row in rows)  # no toy blamed in a row
    serial = run_toys(test, DyingGenerator(0.0), x_ref, w_ref, n_toys=8, seed=4, executor=None, progress=False)
    assert all(row["t"] == serial.rows[row["toy"]]["t"] for row in rows)


def _children(pid: int) -> set[int]:
    """Descendants of `pid` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list child processes")
def test_killing_the_parent_of_a_pool_campaign_leaves_no_orphans(tmp_path):
    store = tmp_path / "pool.jsonl"
    process = subprocess.Popen([sys.executable, str(HELPER), str(store), "200", "2"], env=ENVIRONMENT)
    deadline = time.monotonic() + 120
    while (not store.exists() or not read_store(store).rows) and time.monotonic() < deadline:
        time.sleep(0.1)
    children = _children(process.pid)
    assert len(children) >= 2  # the pool workers (and the resource tracker)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{child}").exists() for child in children):
        time.sleep(0.2)
    alive = [child for child in children if Path(f"/proc/{child}").exists()
             and "Z" not in (Path(f"/proc/{child}") / "stat").read_text().rsplit(")", 1)[1].split()[:1]]
    assert alive == []


def test_a_store_without_its_header_is_refused_and_repaired_only_with_a_header_given(inputs, filled_store, capsys):
    """A store whose header line is lost must not be taken over by another campaign, and repair must
    not create that state."""
    _, x_ref, w_ref = inputs
    original = filled_store.read_text()
    filled_store.write_text("".join(original.splitlines(keepends=True)[1:]))  # line 1 lost
    headerless = filled_store.read_bytes()
    other = NPLMTest(KernelNPLM(n_centers=30, penalty=1e-3), width_quantiles=None)
    with pytest.raises(StoreError, match="toy rows but no campaign header on line 1"):
        run_toys(other, BENCHMARK.data, x_ref, w_ref, n_toys=8, seed=9, executor=None, store=filled_store,
                 progress=False)
    with pytest.raises(StoreError, match="toy rows but no campaign header"):
        read_store(filled_store)
    assert main(["store", "check", str(filled_store)]) == 2 and "header:     missing" in capsys.readouterr().err
    assert main(["store", "repair", str(filled_store)]) == 2
    assert "nothing was changed" in capsys.readouterr().err and filled_store.read_bytes() == headerless
    damaged = filled_store.with_name("damaged.jsonl")
    damaged.write_text('{"record": "campaign", "format"\n' + headerless.decode())  # a header cut in the middle
    with pytest.raises(StoreError, match="no campaign header"):
        repair_store(damaged)
    sibling = filled_store.with_name("sibling.jsonl")
    sibling.write_text(original.splitlines(keepends=True)[0])  # a store of the same campaign
    assert main(["store", "repair", str(damaged), "--header-from", str(sibling)]) == 0
    assert "under the header of" in capsys.readouterr().out
    assert len(read_store(damaged).rows) == 5 and "damaged.jsonl.rejected" in str(list(damaged.parent.iterdir()))
    resumed = run_toys(inputs[0], BENCHMARK.data, x_ref, w_ref, n_toys=6, seed=1, executor=None, store=damaged,
                       progress=False)
    assert len(resumed.t) == 6


def test_rows_that_cannot_belong_to_the_campaign_are_bad_lines(inputs, filled_store, capsys):
    """A toy index beyond n_toys and a successful negative t of the NPLM loss (t >= 0 by construction)
    are refused by every reader, and calibrate does not use them."""
    lines = filled_store.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["n_toys"] == 5 and header["t_floor"] == 0.0 and header["execution"]["threads_per_toy"] == 1
    beyond = json.loads(lines[1]) | {"toy": 17}
    negative = json.loads(lines[2]) | {"toy": 3, "t": -4.0}
    lines[4] = json.dumps(negative)  # toy 3's row replaced
    filled_store.write_text("\n".join(lines + [json.dumps(beyond)]) + "\n")
    report = check_store(filled_store)
    assert [number for number, _ in report.bad_lines] == [5, 7]
    assert "t = -4.0 is below 0.0, the lowest t this test can give" in report.bad_lines[0][1]
    assert "toy index 17 is beyond the campaign's n_toys = 5" in report.bad_lines[1][1]
    assert main(["calibrate", "--store", str(filled_store)]) == 2
    assert "line 5: t = -4.0 is below 0.0" in capsys.readouterr().err
    # with nuisances t = tau - Delta may lie below 0: no floor is claimed
    assert NPLMTest(KernelNPLM(), nuisances=NuisanceModel([NormalizationNuisance("n", 0.1)])).t_floor is None
    assert NPLMTest(KernelNPLM(loss="logistic")).t_floor is None


def test_the_default_test_has_a_floor_per_member_and_none_for_the_excess_scan(inputs):
    """The full model's t is never below 0, the scan's can be: a row below 0 in the model's column
    cannot belong to the campaign, one in the scan's column can."""
    from nplm_kernel.store import t_floor_problem

    _, x_ref, w_ref = inputs
    default = NPLMTest(KernelNPLM(n_centers=30)).for_reference(x_ref, w_ref)
    assert default.t_floor == [0.0, None] == NPLMTest(KernelNPLM()).t_floor  # before its widths are found too
    assert t_floor_problem([3.0, -5.0], default.t_floor, 100) is None
    assert "t = -5.0 is below 0.0" in t_floor_problem([-5.0, 3.0], default.t_floor, 100)


def test_a_fit_below_the_floor_is_a_failed_row_not_an_ok_one(inputs, monkeypatch):
    test, x_ref, w_ref = inputs
    fit = NPLMTest.run
    monkeypatch.setattr(NPLMTest, "run", lambda *args, **kwargs: dataclasses.replace(fit(*args, **kwargs), t=-1.0))
    result = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=2, seed=1, executor=None, progress=False,
                      max_failure_fraction=1.0)
    assert result.n_failed == 2 and "FitError: numerical trouble: t = -1.0 is below 0.0" in result.rows[0]["status"]


def test_a_full_disk_and_a_directory_are_named_and_an_estimator_is_not_a_test(inputs, tmp_path, monkeypatch):
    test, x_ref, w_ref = inputs
    with pytest.raises(InputError, match="is a directory, not a toy store"):
        read_store(tmp_path)
    with pytest.raises(InputError, match="is a directory, not a toy store"):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=2, executor=None, progress=False, store=tmp_path)
    with pytest.raises(ConfigurationError, match=r"needs a test, such as NPLMTest\(KernelNPLM\(...\)\), not the "
                                                 "estimator KernelNPLM"):
        run_toys(KernelNPLM(), BENCHMARK.data, x_ref, w_ref, n_toys=2, executor=None, progress=False)

    def full_disk(_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(StoreError, match=r"full.jsonl: cannot write the toy store: No space left on device"):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=2, executor=None, progress=False,
                 store=tmp_path / "full.jsonl")


class NoAttributes:
    """A generator whose description is its repr, with an address."""

    __slots__ = ()

    def __call__(self, rng):
        return BENCHMARK.data(rng)


def test_functions_are_identified_by_what_they_compute(inputs, tmp_path):
    """Two lambdas, or a function redefined under one name, are different generators."""
    test, x_ref, w_ref = inputs
    store = tmp_path / "functions.jsonl"
    run_toys(test, lambda rng: BENCHMARK.data(rng), x_ref, w_ref, n_toys=2, executor=None, progress=False, store=store)
    with pytest.raises(CampaignMismatchError, match=r"generator\.code"):
        run_toys(test, lambda rng: BENCHMARK.data(rng) * 2.0, x_ref, w_ref, n_toys=4, executor=None, progress=False,
                 store=store)
    scale = 1.0

    def background(rng):
        return BENCHMARK.data(rng) * scale

    first = describe(background)
    scale = 3.0  # the value the function uses changed
    assert describe(background) != first
    namespace = {"BENCHMARK": BENCHMARK}
    exec("def background(rng):\n    return BENCHMARK.data(rng)", namespace)
    before = describe(namespace["background"])
    exec("def background(rng):\n    return BENCHMARK.data(rng) + 1.0", namespace)  # redefined under its name
    assert describe(namespace["background"])["function"] == before["function"]
    assert describe(namespace["background"]) != before
    with pytest.raises(ConfigurationError, match="the generator cannot be identified: .* generator_name="):
        run_toys(test, NoAttributes(), x_ref, w_ref, n_toys=2, executor=None, progress=False, store=tmp_path / "x")
    header = json.loads(store.read_text().splitlines()[0])
    header["identity"]["generator"].pop("code")  # a store written when functions were named only
    store.write_text(json.dumps(header) + "\n")
    with pytest.raises(CampaignMismatchError, match="names its generator function by name only .* generator_name="):
        run_toys(test, lambda rng: BENCHMARK.data(rng), x_ref, w_ref, n_toys=2, executor=None, progress=False,
                 store=store)


def test_the_command_line_checks_a_store_before_any_fit(inputs, filled_store, tmp_path, monkeypatch, capsys):
    x_ref, w_ref = inputs[1], inputs[2]
    np.save(tmp_path / "reference.npy", x_ref)
    np.save(tmp_path / "data.npy", BENCHMARK.data(np.random.default_rng(1)))

    def no_fit(*_args, **_kwargs):
        raise AssertionError("fitted before the store was checked")

    monkeypatch.setattr(NPLMTest, "run", no_fit)
    arguments = ["test", "--data", str(tmp_path / "data.npy"), "--reference", str(tmp_path / "reference.npy"),
                 "--expected-yield", str(w_ref.sum()), "--n-centers", "40", "--null", str(filled_store)]
    assert main(arguments) == 2
    assert "holds toys of another test" in capsys.readouterr().err
    (tmp_path / "analysis.yaml").write_text(
        "inputs: {data: {path: data.npy}, reference: {path: reference.npy, expected_yield: 100}}\n"
        "backend: {kind: kernel, n_centers: 40}\n"
        "toys: {n_toys: 4, executor: serial, pool_fraction: 0.5, store: toys.jsonl}\noutputs: {directory: out}\n")
    (tmp_path / "out").mkdir()
    shutil.copy(filled_store, tmp_path / "out" / "toys.jsonl")
    assert main(["run", str(tmp_path / "analysis.yaml"), "--no-progress"]) == 2
    assert "holds toys of another campaign" in capsys.readouterr().err


@pytest.mark.slow
def test_workers_dying_in_quick_succession_stop_the_pool_campaign_with_a_clear_error(inputs):
    test, x_ref, w_ref = inputs
    with pytest.raises(ExecutorError, match="was running alone in a fresh worker process each of the 1 times"):
        run_toys(test, DyingGenerator(1.0), x_ref, w_ref, n_toys=6, seed=4, executor=2, progress=False, max_losses=0)


@pytest.mark.slow
def test_a_pool_campaign_in_a_script_without_the_main_guard_says_what_to_add(tmp_path):
    """Also with a reference larger than a pipe's 64 KiB (here 160 KB), which the workers once
    received through the pipe that a dying worker never reads: the campaign then hung."""
    script = tmp_path / "campaign.py"
    script.write_text("import numpy as np\n"
                      "from campaign_helpers import BENCHMARK, small_campaign_inputs\n"
                      "from nplm_kernel.toys import run_toys\n"
                      "test, x_ref, w_ref = small_campaign_inputs()\n"
                      "x_ref, w_ref = np.tile(x_ref, (10, 1)), np.tile(w_ref, 10) / 10\n"
                      "run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=4, executor=2, progress=False)\n")
    finished = subprocess.run([sys.executable, str(script)], env=ENVIRONMENT, capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode != 0
    assert "ExecutorError: the pool's worker processes died while starting" in finished.stderr
    assert 'under `if __name__ == "__main__":`' in finished.stderr
