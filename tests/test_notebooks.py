"""Headless papermill runs of the notebooks at the smoke profile, checked through their scraps.

(nbval, configured in pyproject.toml, also re-runs every notebook and compares the cells marked
NBVAL_CHECK_OUTPUT: architecture summary, data shapes, parameter validation.)
"""
import re
import subprocess
import sys

import nbformat
import papermill as pm
import pytest
import scrapbook as sb

from interpretgan.paths import REPO_ROOT

NB = REPO_ROOT / "notebooks"
EXECUTED = NB / "executed"  # committed runs at other profiles; nbval does not collect them
KERNEL = "interpretgan"


def run(name, out_dir, **params):
    out = out_dir / f"{name}.ipynb"
    pm.execute_notebook(str(NB / f"{name}.ipynb"), str(out), parameters={"profile": "smoke", **params},
                        kernel_name=KERNEL, cwd=str(NB), progress_bar=False)
    return sb.read_notebook(str(out)).scraps.data_dict


def run_cli(name, out, **params):
    """The user's own command line, from notebooks/: `papermill <name>.ipynb <out> -p k v ...`; returns the scraps."""
    cmd = [sys.executable, "-m", "papermill", f"{name}.ipynb", str(out), "-k", KERNEL]
    for k, v in params.items():
        cmd += ["-p", k, str(v)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=NB)
    return sb.read_notebook(str(out)).scraps.data_dict


def _failing_cells_in_process(name, parameters):
    """Inject ``parameters`` as papermill does and run the notebook's code cells in one IPython shell in this
    process, from notebooks/, until a cell raises; returns (index of that code cell, its exception)."""
    from IPython.core.interactiveshell import InteractiveShell
    from papermill.parameterize import parameterize_notebook
    from traitlets.config import Config

    nb = parameterize_notebook(nbformat.read(str(NB / f"{name}.ipynb"), as_version=4), parameters,
                               kernel_name=KERNEL)
    config = Config()
    config.HistoryManager.enabled = False  # no history database written under ~/.ipython
    shell = InteractiveShell.instance(config=config)
    shell.reset(new_session=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(NB)
        for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            result = shell.run_cell(cell.source, silent=True)
            if result.error_in_exec is not None:
                return i, result.error_in_exec
    return None, None


def test_01_train_smoke_glues_test_accuracy(tmp_path):
    scraps = run("01_train", tmp_path)
    assert 0.8 <= scraps["test_accuracy"] <= 1.0


def test_01_train_atta_smoke_glues_the_robustness_check(tmp_path):
    scraps = run("01_train", tmp_path, training="atta")
    assert 0.5 <= scraps["test_accuracy"] <= 1.0
    assert 0.0 <= scraps["robust_accuracy_check"] <= scraps["test_accuracy"]


def test_06_pooling_smoke_glues_both_tables_and_the_masking_checks(tmp_path):
    scraps = run("06_pooling", tmp_path)
    attacks = {"clean", "pgd40", "pgd100", "mpgd40", "fgsm"}
    table, per_seed = scraps["pooling_table"], scraps["pooling_per_seed"]
    assert set(table) == set(per_seed) == {"max", "avg"}
    for pool in ("max", "avg"):
        assert set(table[pool]) == set(per_seed[pool]) == attacks
        for a in attacks:  # one seed at the smoke profile: the mean is that seed's value
            assert len(per_seed[pool][a]) == 1 and table[pool][a] == per_seed[pool][a][0]
        # robust accuracy never exceeds clean accuracy, and PGD-100 continues PGD-40's run
        assert max(table[pool][a] for a in attacks) <= table[pool]["clean"] + 0.02
        assert table[pool]["pgd100"] <= table[pool]["pgd40"] + 1e-9
        m = scraps["masking"][pool]
        assert m["worst_case"] <= min(m["white_box"], m["apgd_ce"], m["apgd_dlr"], m["transfer"])
    cifar = scraps["cifar_table"]
    assert set(cifar) == {"vgg16", "wrn"} and set(cifar["wrn"]["avg"]) == {"clean", "pgd20", "pgd100", "mpgd20", "fgsm"}
    assert scraps["cifar_images"] == {"clean": 64, "fgsm": 64, "pgd20": 64, "pgd100": 64, "mpgd20": 64}  # smoke: 64
    assert scraps["cifar_recorded"] == []  # the records of the smoke profile's own shipped models: none
    for arch in ("vgg16", "wrn"):  # issue 30: the masking checks on CIFAR-10 too
        for pool in ("max", "avg"):
            m = scraps["cifar_masking"][arch][pool]
            assert m["worst_case"] <= min(m["white_box"], m["apgd_ce"], m["apgd_dlr"], m["transfer"])
    # the index change at each of VGG16's five max poolings, inside its interval
    change = scraps["cifar_index_change"]
    assert len(change) == 5 and all(k.endswith("seed 0") for k in change)
    assert all(0 <= low <= mid <= high <= 1 for mid, low, high in change.values())


def test_03_fit_interpretgan_smoke_glues_every_layer(tmp_path):
    scraps = run("03_fit_interpretgan", tmp_path)
    layers = {"conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3"}
    for name in ("explanation_accuracy", "explanation_accuracy_independent", "frechet", "frechet_inverter"):
        assert set(scraps[name]) == layers, name
    assert all(0 <= v <= 1 for v in scraps["explanation_accuracy"].values())
    assert all(v > 0 for v in scraps["frechet"].values())
    assert set(scraps["explanation_accuracy_lambda0"]) == {"conv2", "fc2"}
    # the panel: every judge reads every layer; the glued panel mean is the mean of the judges
    panel = scraps["explanation_accuracy_panel"]
    assert set(panel) == {"lenet", "mlp", "resnet", "robust"}
    for layer in layers:
        mean = sum(panel[j][layer] for j in panel) / len(panel)
        assert scraps["explanation_accuracy_independent"][layer] == pytest.approx(mean, abs=1e-3)
        assert 0 <= scraps["class_mean_share"][layer] <= 1 and scraps["same_label_distance"][layer] > 0
    assert set(scraps["frechet_panel"]) == set(panel)
    assert 0.1 < scraps["real_digits"]["class-mean share"] < 0.4  # real digits are not templates


def test_03_refuses_a_layer_the_model_lacks_and_names_its_layers():
    _, error = _failing_cells_in_process("03_fit_interpretgan", {"profile": "smoke", "layers": "conv1,conv9"})
    assert type(error).__name__ == "ParameterError"
    assert "conv1, conv2, conv3, conv4, fc1, fc2, fc3" in str(error)


def test_02_attack_cli_glues_robust_accuracy_per_attack(tmp_path):
    """The user's command line, `papermill 02_attack.ipynb out.ipynb -p epsilon 3/10`: the fraction arrives as a
    string and is parsed, and robust accuracy is glued for each of the default attacks."""
    robust = run_cli("02_attack", tmp_path / "02.ipynb", profile="smoke", epsilon="3/10")["robust_accuracy"]
    # (a glued dict comes back with sorted keys: nbformat writes JSON with sort_keys)
    assert set(robust) == {"fgsm", "pgd40", "pgd100", "mpgd40"}
    assert all(0.0 <= v <= 1.0 for v in robust.values())
    # a natural model has no defence at eps 0.3 (so 3/10 was read as 0.3, not refused or misread as a small
    # radius); PGD-100 is at least as strong as PGD-40 up to noise
    assert robust["pgd40"] <= 0.05 and robust["pgd100"] <= robust["pgd40"] + 0.02


BAD_PARAMETERS = [
    ("01_train", "pooling", "foo", "must be one of max, avg"),
    ("01_train", "profile", "huge", "must be one of smoke, default, paper"),
    ("02_attack", "epsilon", -1, "'epsilon' must lie in (0, 1]"),
    ("02_attack", "attacks", "pgd40,cw", "fgsm, pgd<k>, mpgd<k>"),
    ("01_train", "training", "adversarial", "must be one of natural, atta"),
    ("06_pooling", "profile", "huge", "must be one of smoke, default, paper"),
    ("06_pooling", "cifar", "maybe", "must be one of True, False"),
    ("06_pooling", "cifar_test", "most", "'cifar_test' must be None (the profile's), 'all' or a positive number"),
    ("07_celeba", "layers", "conv1", "names among block1, block2"),
    ("07_celeba", "images", 660, "test-image indices in 0..659"),
    ("04_visualize", "dataset", "cifar10", "must be one of mnist, celeba"),
    ("02_attack", "epsilom", 0.5, "unknown parameter 'epsilom' (did you mean 'epsilon'?)"),
    ("05_diagnose", "epsilon", True, "must be a number in (0, 1]"),
    ("01_train", "seed", 2**64, "must be a whole number in 0..4294967295"),
    ("01_train", "data_root", "/nonexistent/interpretgan-data", "must be an existing folder"),
    ("02_attack", "attacks", "fgsm,pgd999999999", "k a whole number in 1..1000"),
]
#: The cases run through papermill and a real kernel (one per kind of check: a choice, a misspelled name, a number
#: papermill injects); the others run the same injected cells in-process, without a kernel's start (8 s each).
BAD_PARAMETERS_IN_A_KERNEL = {("01_train", "pooling"), ("02_attack", "epsilom"), ("01_train", "seed")}


@pytest.mark.parametrize("name, param, value, expected", BAD_PARAMETERS)
def test_bad_parameter_stops_in_the_first_cells_before_writing(tmp_path, monkeypatch, name, param, value, expected):
    """A bad ``-p`` value stops the run in the cell right after the (injected) parameters with a ParameterError
    naming the parameter and its allowed values, before any training or file writing."""
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(artifacts))
    parameters = {"profile": "smoke", param: value}
    if (name, param) in BAD_PARAMETERS_IN_A_KERNEL:
        out = tmp_path / "out.ipynb"
        with pytest.raises(pm.PapermillExecutionError) as err:
            pm.execute_notebook(str(NB / f"{name}.ipynb"), str(out), parameters=parameters, kernel_name=KERNEL,
                                cwd=str(NB), progress_bar=False)
        ename, evalue = err.value.ename, err.value.evalue
        code_cells = [c for c in nbformat.read(str(out), as_version=4).cells if c.cell_type == "code"]
        failed = [i for i, c in enumerate(code_cells) if any(o.get("output_type") == "error" for o in c.outputs)]
    else:
        index, error = _failing_cells_in_process(name, parameters)
        ename, evalue, failed = type(error).__name__, str(error), [index]
    assert ename == "ParameterError" and expected in evalue
    assert f"'{param}'" in evalue
    assert failed == [2]  # code cells: the parameters, the injected parameters, then the check that raised
    assert not artifacts.exists() or not any(artifacts.rglob("*"))


def test_04_visualize_smoke_glues_figure_3_labels(tmp_path):
    labels = run("04_visualize", tmp_path, images="3, 5")["figure3_labels"]
    assert set(labels) == {"natural", "atta"}
    for t in labels:
        assert set(labels[t]) == {"3", "5"}
        for kind in ("natural", "adversarial"):
            assert set(labels[t]["3"][kind]) == {"conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3"}
            assert all(0 <= v <= 9 for v in labels[t]["3"][kind].values())


FACE_LAYERS = ["block1", "block2", "block3", "block4", "block5", "fc1", "fc2", "fc3"]


def test_04_visualize_celeba_shows_figure_5_for_any_faces(tmp_path):
    """`papermill 04_visualize.ipynb out.ipynb -p dataset celeba`: the CelebA model, faces picked by index."""
    labels = run_cli("04_visualize", tmp_path / "04.ipynb", profile="smoke", dataset="celeba",
                     images="5, 7")["figure3_labels"]
    assert set(labels) == {"natural"} and set(labels["natural"]) == {"5", "7"}
    for kind in ("natural", "adversarial"):
        assert list(labels["natural"]["5"][kind]) == FACE_LAYERS
        assert all(v in (0, 1) for v in labels["natural"]["5"][kind].values())


def test_07_celeba_smoke_glues_every_layer(tmp_path):
    scraps = run("07_celeba", tmp_path)
    for key in ("test_accuracy", "balanced_accuracy", "robust_accuracy"):
        assert 0 <= scraps[key] <= 1
    assert scraps["robust_accuracy"] <= scraps["test_accuracy"] + 0.05  # PGD-20 with a random start
    for key in ("explanation_accuracy", "explanation_accuracy_balanced", "frechet", "frechet_inverter",
                "adversarial_label_share", "acc", "vul"):
        assert list(scraps[key]) == FACE_LAYERS, key
    assert all(0 <= v <= 1 for v in scraps["explanation_accuracy_balanced"].values())
    assert all(v is None or 0 <= v <= 1 for v in scraps["adversarial_label_share"].values())  # None: none fooled
    assert all(v >= 0 for v in scraps["frechet"].values())
    assert sum(scraps["vul"].values()) == pytest.approx(1 - scraps["acc"]["fc3"], abs=1e-3)  # eq. 5 telescopes
    kept = scraps["attribute_kept"]  # Figure 4, measured: per attribute, every layer and the faces themselves
    for attribute in ("Eyeglasses", "Wearing_Hat", "Smiling"):
        assert set(kept[attribute]) == {*FACE_LAYERS, "faces"}, attribute
        for layer, share in kept[attribute].items():
            low, high = kept[f"{attribute} low"][layer], kept[f"{attribute} high"][layer]
            assert share is None or low <= share <= high, (attribute, layer)


def test_05_diagnose_users_command_with_avg_pooling(tmp_path):
    """The user's own command, from notebooks/: `papermill 05_diagnose.ipynb -p pooling avg` (smoke profile)."""
    scraps = run_cli("05_diagnose", tmp_path / "05.ipynb", pooling="avg", profile="smoke")
    layers = ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3"]
    for t in ("natural", "atta"):
        acc, vul = scraps["acc"][t], scraps["vul"][t]
        assert set(acc) == set(vul) == set(layers)
        assert sum(vul.values()) == pytest.approx(1 - acc["fc3"], abs=1e-3)  # equation 5 telescopes
        assert vul["conv1"] == pytest.approx(1 - acc["conv1"], abs=1e-4)
        for layer in layers:
            lo, hi = scraps["ci"][t][layer]["acc"]
            assert lo <= acc[layer] <= hi
    assert "does not apply" in scraps["maxpool_index_change"]
    for t in ("natural", "atta"):
        # the noise control and the attack's share: share = Vul_i(attack) - Vul_i(noise), layer by layer
        for layer in layers:
            assert scraps["attack_share"][t][layer] == pytest.approx(
                scraps["vul"][t][layer] - scraps["vul_noise"][t][layer], abs=2e-4)
            assert 0 <= scraps["acc_panel"][t][layer] <= 1 and 0 <= scraps["acc_noise"][t][layer] <= 1
        assert set(scraps["adversarial_class"][t]) == {"f", "panel"}


def test_committed_notebooks_carry_no_injected_parameters_cell():
    """The committed notebooks show a default-profile run, but nbval must re-run them at the test profile:
    an injected ``profile = "default"`` cell (papermill's, tagged injected-parameters) would override it."""
    for path in sorted(NB.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
        assert "injected-parameters" not in tags, path.name
        assert tags.count("parameters") == 1, path.name


def _outputs_text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif o.get("output_type") in ("execute_result", "display_data"):
            parts.append(str(o.get("data", {}).get("text/plain", "")))
            parts.append(str(o.get("data", {}).get("text/html", "")))
        elif o.get("output_type") == "error":
            parts.append(f"ERROR {o.get('ename')}: {o.get('evalue')}")
    return "\n".join(parts)


#: The most bytes a committed notebook may hold: GitHub renders it and a clone stays small (07 was 7.9 MB of PNGs).
MAX_NOTEBOOK_BYTES = 3_000_000
#: What an absolute path of the machine that ran a notebook looks like.
ABSOLUTE_PATH = re.compile(r"(/work/|/home/|/root/|/tmp/|/Users/|/mnt/|/var/|/opt/|(?<![A-Za-z])[A-Za-z]:[\\/])")
#: A text progress bar's line: its description, the percentage, the bar, then n/N.
BAR_LINE = re.compile(r"^(?P<desc>.*?):?\s*(?P<pct>\d+)%\|.*\|\s*(?P<n>\d+)/(?P<total>\d+)")


def _strings(obj):
    """Every string inside a JSON-like value."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def _committed_notebooks():
    return sorted(NB.glob("*.ipynb")) + sorted(EXECUTED.glob("*.ipynb"))


def test_committed_notebooks_read_well_without_a_kernel():
    """What a reader sees on GitHub or nbviewer: no progress bar stuck at its first frame (0/N), no absolute
    path of the machine that ran them, no error and no warning, and every interactive cell shows a picture.
    The executed copies under notebooks/executed/ (runs at other profiles) are held to the same."""
    for path in _committed_notebooks():
        nb = nbformat.read(str(path), as_version=4)
        for k, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            text = _outputs_text(cell)
            where = f"{path.name}, code cell {k}"
            assert not re.search(r"(?<![\d/])0/\d+ \[", text), f"{where}: a progress bar at 0/N"
            assert not ABSOLUTE_PATH.search(text), f"{where}: an absolute path"
            assert "ERROR " not in text and not re.search(r"\w+Warning\b", text), f"{where}: an error or a warning"
            assert not any(o.get("output_type") == "stream" and o.get("name") == "stderr" and "Warning" in o["text"]
                           for o in cell.get("outputs", [])), where
            if "_widget(" in cell.source:
                assert any({"image/png", "image/jpeg"} & set(o.get("data", {})) for o in cell.get("outputs", [])), \
                    f"{where}: an interactive cell without a static picture"


def test_committed_notebooks_metadata_names_no_machine_and_the_real_parameters():
    """Issue 32, item 1: ``metadata.papermill`` held the absolute input and output paths of the machine that ran
    each notebook, and the paper-profile copy of 06 said ``parameters: {"profile": "default"}``. No string anywhere
    in a committed notebook's metadata (the notebook's, every cell's, every output's) is an absolute path; the
    papermill paths are relative to the repository; the recorded profile is the one the run printed (code cell 1
    says "profile <name>, ...") and, for notebooks/executed/<name>.<profile>.ipynb, the one its name says."""
    from interpretgan.reproduce import profile_of

    for path in _committed_notebooks():
        nb = nbformat.read(str(path), as_version=4)
        metadata = [nb.metadata] + [c.metadata for c in nb.cells] + \
                   [o.get("metadata", {}) for c in nb.cells for o in c.get("outputs", [])]
        absolute = [s for m in metadata for s in _strings(m) if s.startswith("/") or ABSOLUTE_PATH.search(s)]
        assert not absolute, f"{path.name}: absolute paths in its metadata: {absolute[:3]}"
        run = nb.metadata.papermill
        relative = path.relative_to(REPO_ROOT).as_posix()
        assert run.output_path == relative, (path.name, run.output_path)
        assert run.input_path == f"notebooks/{path.name.split('.')[0]}.ipynb", (path.name, run.input_path)
        code = [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
        printed = re.search(r"\bprofile (\w+),", _outputs_text(code[1]))  # (an executed copy's -p cell left out)
        assert printed, f"{path.name}: code cell 1 does not say its profile"
        assert run.parameters.get("profile") == printed.group(1), (path.name, run.parameters, printed.group(1))
        if path.parent == EXECUTED:
            assert run.parameters["profile"] == profile_of(path), (path.name, run.parameters)


def _bar_frames(text: str) -> list[str]:
    """Lines of ``text`` that are a progress bar's earlier frame: a bar line followed by the same line again, or by a
    line of the same bar (same description and total) further along while it was unfinished. A stored output keeps
    only each bar's last frame (two finished bars of one description, e.g. one per model, are two bars)."""
    lines = [BAR_LINE.match(line) for line in text.split("\n")]
    frames = []
    for a, b in zip(lines, lines[1:]):
        if a and b and (a.string == b.string or (a["desc"], a["total"]) == (b["desc"], b["total"])
                        and int(a["n"]) < int(a["total"]) and int(b["n"]) >= int(a["n"])):
            frames.append(a.string)
    return frames


def test_committed_notebooks_store_each_bar_once_and_stay_small():
    """Issue 32, items 2 and 7: 05 stored 48 raw progress-bar frames on stderr (one message each), and 07 was 7.9 MB.
    In every committed notebook each stream's text is what a reader sees: no carriage return, consecutive messages
    of one stream merged, each bar's last frame once; and each file is under MAX_NOTEBOOK_BYTES."""
    for path in _committed_notebooks():
        nb = nbformat.read(str(path), as_version=4)
        for k, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            where = f"{path.name}, code cell {k}"
            streams = [o for o in cell.get("outputs", []) if o.get("output_type") == "stream"]
            assert not any("\r" in o.text for o in streams), f"{where}: raw carriage-return frames"
            names = [o.get("output_type") + ":" + o.get("name", "") for o in cell.get("outputs", [])]
            assert not any(a == b and a.startswith("stream") for a, b in zip(names, names[1:])), \
                f"{where}: consecutive {names} messages not merged"
            for o in streams:
                assert not _bar_frames(o.text), f"{where}: repeated bar frames {_bar_frames(o.text)[:2]}"
        size = path.stat().st_size
        assert size < MAX_NOTEBOOK_BYTES, f"{path.name}: {size:,} bytes (limit {MAX_NOTEBOOK_BYTES:,})"


def test_paper_profile_run_of_06_is_committed_whole_and_without_errors():
    """`python -m interpretgan.reproduce --profile paper --executed --only 06_pooling`, committed: it ran at the paper
    profile, every code cell ran once in order, none shows an error, and Table 2 and the masking checks are glued."""
    path = EXECUTED / "06_pooling.paper.ipynb"
    assert path.exists(), path
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert _outputs_text(code[1]).startswith("profile paper,")  # the profile reaches it through the environment
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    scraps = sb.read_notebook(str(path)).scraps.data_dict
    attacks = {"clean", "pgd40", "pgd100", "mpgd40", "fgsm"}
    for pool in ("max", "avg"):  # three seeds per pooling, every Table 2 column, and both masking checks
        assert set(scraps["pooling_per_seed"][pool]) == attacks
        assert all(len(v) == 3 for v in scraps["pooling_per_seed"][pool].values())
        assert {"white_box", "apgd_ce", "apgd_dlr", "transfer"} <= set(scraps["masking"][pool])
    # the masking tables (percent, one decimal) show the glued fractions, not whole percents
    table = next(c for c in code if 'checks["apgd"]' in c.source)
    apgd_html = next(o["data"]["text/html"] for o in table.outputs if "text/html" in o.get("data", {}))
    for pool in ("max", "avg"):
        for k in ("white_box", "apgd_ce", "apgd_dlr", "transfer", "worst_case"):
            assert f"<td>{100 * scraps['masking'][pool][k]:.1f}</td>" in apgd_html, (pool, k)
    assert "cifar_table" not in scraps  # the CIFAR-10 part is a GPU job at the paper profile


def test_committed_06_runs_table3_on_every_test_image_or_names_the_models_it_lacks():
    """Issue 30: the committed 06 (default profile) either ran its CIFAR-10 part, with clean accuracy and FGSM on
    all 10,000 test images for every model and both poolings for every seed, or skipped it saying which models
    are neither shipped nor cached (exactly those of this checkout's weights/ that are missing)."""
    from interpretgan import robustness

    path = NB / "06_pooling.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    scraps = sb.read_notebook(str(path)).scraps.data_dict
    first = _outputs_text([c for c in nb.cells if c.cell_type == "code"][1])
    from interpretgan import table3

    now = {f"{r.arch} {r.pooling} seed {r.seed}" for r in table3.records().itertuples()}
    assert set(scraps["cifar_recorded"]) == now  # the committed run shows every record this checkout's weights hold
    if "cifar_table" not in scraps:
        missing = robustness.missing_study_models("default", "cifar10", ("vgg16", "wrn"))
        said = re.search(r"CIFAR-10 part off: (\d+) of its models are neither shipped nor cached \((.*)\)", first)
        assert said, first
        shipped_then = set(said.group(2).split(", "))
        assert int(said.group(1)) == len(shipped_then) and set(missing) <= shipped_then, (said.group(2), missing)
        return
    images = scraps["cifar_images"]
    assert images["clean"] == images["fgsm"] == 10_000 and images["pgd20"] == images["mpgd20"] >= 1_000, images
    assert images["pgd100"] >= 250, images
    for arch, table in scraps["cifar_table"].items():
        assert set(table) == {"max", "avg"}, arch
    assert len(scraps["cifar_index_change"]) == 5 * 3  # every VGG16 pooling, every seed


def test_tidy_notebook_writes_relative_paths_the_real_profile_and_smaller_pictures():
    """``reproduce.tidy_notebook``, what every run's output and the committed notebooks go through: papermill's paths
    relative to the repository (None outside it), the profile among the parameters, bar frames squashed, a
    photographic PNG as JPEG and a few-colour one as a palette PNG (exact here), nothing else touched; a second pass
    changes nothing."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from interpretgan.reproduce import SHRINK_ABOVE, tidy_notebook

    def png(array):
        buf = io.BytesIO()
        Image.fromarray(array.astype(np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:400, 0:400]
    photo = np.stack([xx * 0.6, yy * 0.6, (xx + yy) * 0.3], -1) + rng.normal(0, 3, (400, 400, 3))
    palette = rng.integers(0, 256, (200, 3))  # 200 colours, one per pixel at random
    few = palette[rng.integers(0, 200, (500, 500))]
    small = np.zeros((20, 20, 3))
    images = [png(np.clip(photo, 0, 255)), png(few), png(small)]
    assert len(images[0]) > SHRINK_ABOVE and len(images[1]) > SHRINK_ABOVE and len(images[2]) < SHRINK_ABOVE
    cell = nbformat.v4.new_code_cell("plot()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\rfit:  50%|#  | 1/2"),
                    nbformat.v4.new_output("stream", name="stderr", text="\rfit: 100%|###| 2/2\n")] + [
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(b).decode(), "text/plain": "<Figure>"})
        for b in images]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata.papermill = {"input_path": str(NB / "05_diagnose.ipynb"), "output_path": "/elsewhere/run/05.ipynb",
                             "parameters": {"pooling": "avg"}, "duration": 1.0}
    report = tidy_notebook(nb, "paper", {"epsilon": "8/255"})
    run = nb.metadata.papermill
    assert (run.input_path, run.output_path) == ("notebooks/05_diagnose.ipynb", None)
    assert run.parameters == {"pooling": "avg", "epsilon": "8/255", "profile": "paper"} and run.duration == 1.0
    assert report["outputs_removed"] == 1 and cell.outputs[0].text == "fit: 100%|###| 2/2\n"
    jpeg, pal, kept = (o.data for o in cell.outputs[1:])
    assert set(jpeg) == {"image/jpeg", "text/plain"} and set(pal) == set(kept) == {"image/png", "text/plain"}
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(jpeg["image/jpeg"]))), dtype=float)
    assert np.abs(decoded - np.clip(photo, 0, 255).astype(np.uint8)).mean() < 3  # JPEG at quality 85
    shrunk = Image.open(io.BytesIO(base64.b64decode(pal["image/png"])))
    assert shrunk.mode == "P" and np.array_equal(np.asarray(shrunk.convert("RGB")), few.astype(np.uint8))
    assert kept["image/png"] == base64.b64encode(images[2]).decode()
    saved = len(images[0]) + len(images[1]) - len(base64.b64decode(jpeg["image/jpeg"])) - \
        len(base64.b64decode(pal["image/png"]))
    assert report["image_bytes_saved"] == saved > 0
    nbformat.validate(nb)
    once = nbformat.writes(nb)
    assert tidy_notebook(nb, "paper") == {"outputs_removed": 0, "image_bytes_saved": 0} and nbformat.writes(nb) == once
    with pytest.raises(ValueError, match="smoke, default, paper"):
        tidy_notebook(nb, "huge")


def test_reproduce_executed_refuses_to_replace_a_committed_copy_without_force(capsys):
    """`python -m interpretgan.reproduce --profile paper --executed --only 06_pooling` replaced the committed
    notebooks/executed/06_pooling.paper.ipynb without a word: it now stops before running anything, naming the file
    and --force. Nothing is written."""
    from interpretgan import reproduce

    committed = EXECUTED / "06_pooling.paper.ipynb"
    before = committed.read_bytes()
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["--profile", "paper", "--executed", "--only", "06_pooling"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "would replace the committed notebooks/executed/06_pooling.paper.ipynb" in err and "--force" in err
    for argv in (["--force"], ["--inplace", "--executed"], ["--tidy", str(committed), "--only", "06_pooling"],
                 ["--write-readme", "--only", "01_train"]):
        with pytest.raises(SystemExit):
            reproduce.main(argv)
    assert committed.read_bytes() == before


def test_readme_committed_runs_table_is_generated_from_the_notebooks(tmp_path):
    """Issue 32, item 8: the README's figures of committed runs (03's 32.2 min against its record's 32.4; 05's slider
    grid "14 s" against its bar's 53 s) were written by hand. The README's committed-runs block is now
    ``reproduce.committed_runs_table()``, made from the notebooks' own records; checked here on the committed
    notebooks and on a made-up one (hours in a bar's clock, bars under 10 s left out, the longest first)."""
    from interpretgan.paths import REPO_ROOT
    from interpretgan.reproduce import RUNS_BEGIN, RUNS_END, committed_runs_table

    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split(RUNS_BEGIN + "\n")[1].split("\n" + RUNS_END)[0]
    assert block == committed_runs_table(), "run: python -m interpretgan.reproduce --write-readme"
    rows = block.splitlines()[2:]
    assert len(rows) == len(_committed_notebooks())
    for path, row in zip(_committed_notebooks(), rows):
        run = nbformat.read(str(path), as_version=4).metadata.papermill
        seconds = float(run.duration)
        wall = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
        assert row.startswith(f"| `{path.relative_to(REPO_ROOT).as_posix()}` | {run.parameters['profile']} | {wall} |")

    (tmp_path / "notebooks").mkdir()
    cell = nbformat.v4.new_code_cell("fit()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=(
        "short: 100%|###| 5/5 [00:09<00:00,  1.00it/s]\n"
        "long fit: 100%|###| 9/9 [1:02:03<00:00,  9.00s/it]\n"
        "medium: 100%|###| 3/3 [00:42<00:00,  3.00s/it]\n"))]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata.papermill = {"duration": 3725.0, "end_time": "2026-12-07T10:00:00+00:00", "parameters": {"profile": "paper"}}
    nbformat.write(nb, str(tmp_path / "notebooks" / "08_made_up.ipynb"))
    made_up = committed_runs_table(tmp_path).splitlines()[2:]
    assert made_up == ["| `notebooks/08_made_up.ipynb` | paper | 62.1 min | 2026-12-07 | long fit 3723 s, medium 42 s |"]


YOUR_MODEL = '''from torch import nn


def net():
    return nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(200, 10))


def number():
    return 42
'''


def test_08_your_model_smoke_diagnoses_a_model_file_written_here(tmp_path):
    """The user's path: a model file of their own, no weights, every layer found, through papermill."""
    (tmp_path / "mine.py").write_text(YOUR_MODEL)
    scraps = run("08_your_model", tmp_path, model=f"{tmp_path / 'mine.py'}:net", weights=None, n_images=32,
                 compare=False)
    assert scraps["layers"] == ["2", "5", "7"]  # two conv blocks closed by their pooling, the logits
    table = scraps["table"]
    assert list(table) == scraps["layers"]
    vul = sum(row["vul"] for row in table.values())
    assert vul == pytest.approx(1 - table["7"]["acc"], abs=1e-3)  # equation 5: the Vul_i add up to 1 - Acc_last
    assert all(0 <= row["acc_low"] <= row["acc"] <= row["acc_high"] <= 1 for row in table.values())
    assert set(scraps["maxpool_index_change"]) == {"2", "5"}
    assert set(scraps["panel_mean"]) == {"2", "5", "7"} and 0 <= scraps["accuracy"]["robust"] <= 1


COLOUR_MODEL = '''
import torch.nn as nn


def net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
'''


def test_08_your_model_smoke_on_cifar10_without_a_panel(tmp_path):
    """3-channel images and a dataset without a panel of judges (CIFAR-10): the notebook reads the explanations by f
    alone, glues no panel mean, and still measures the max-pool index change."""
    (tmp_path / "colour.py").write_text(COLOUR_MODEL)
    scraps = run("08_your_model", tmp_path, model=f"{tmp_path / 'colour.py'}:net", weights=None, dataset="cifar10",
                 epsilon="8/255", attack="pgd5", n_images=32, compare=False)
    assert scraps["layers"] == ["3", "5", "7"]  # the pooled conv block, the strided conv's ReLU, the logits
    assert set(scraps["explanation_accuracy"]) == {"3", "5", "7"} and "panel_mean" not in scraps
    assert all(0 <= v <= 1 for v in scraps["explanation_accuracy"].values())
    assert set(scraps["maxpool_index_change"]) == {"3"}


@pytest.mark.parametrize("param, value, error, expected", [
    ("model", "{tmp}/broken.py:net", "ModelError", "broken.py does not import: SyntaxError"),
    ("model", "{tmp}/mine.py:number", "ModelError", "returned int, not a torch.nn.Module"),
    ("weights", "weights/mnist-judge-mlp.safetensors", "WeightsError", "does not match the model"),
    ("weights", "{tmp}/damaged.safetensors", "WeightsError", "cannot be read as weights: it holds a Python pickle"),
    ("layers", "2,conv9", "ValueError", "unknown layers ['conv9']"),
    ("image_size", 2, "ParameterError", "'image_size' must be a whole number"),
    ("weigths", "x.pt", "ParameterError", "unknown parameter 'weigths' (did you mean 'weights'?)"),
])
def test_08_refuses_bad_models_weights_and_layers_in_its_first_cells(tmp_path, monkeypatch, param, value, error,
                                                                      expected):
    (tmp_path / "mine.py").write_text(YOUR_MODEL)
    (tmp_path / "broken.py").write_text("def net(:\n")
    (tmp_path / "damaged.safetensors").write_bytes(b"\x80\x04 not a state dict")
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("INTERPRETGAN_ARTIFACTS", str(artifacts))
    value = value.format(tmp=tmp_path) if isinstance(value, str) else value
    index, err = _failing_cells_in_process("08_your_model", {"profile": "smoke", "model": f"{tmp_path}/mine.py:net",
                                                             "weights": None, param: value})
    assert index == 2, err  # code cells: the parameters, the injected parameters, then the check that raised
    assert type(err).__name__ == error and expected in str(err), str(err)
    assert not artifacts.exists() or not any(artifacts.rglob("*.safetensors"))  # nothing fitted or cached
