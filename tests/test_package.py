"""The package's shape: no import cycle, and each choice (poolings, trainings, datasets, profiles, attack
names) defined in one place and imported everywhere else."""
import ast
import re
from pathlib import Path

import interpretgan
from interpretgan import attacks, data, models, params, profiles, training

PKG = Path(interpretgan.__file__).parent
#: the package's modules and sub-packages (``gan`` is one: its files count as one module here)
MODULES = sorted([p.stem for p in PKG.glob("*.py") if p.stem != "__init__"] +
                 [p.parent.name for p in PKG.glob("*/__init__.py")])


def _files(module: str) -> list[Path]:
    """The source files of a module, or of every module of a sub-package."""
    return [PKG / f"{module}.py"] if (PKG / f"{module}.py").is_file() else sorted((PKG / module).glob("*.py"))


def _source(module: str) -> str:
    return "\n".join(f.read_text() for f in _files(module))


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports (anywhere in its source, function-local imports included; a
    sub-package's imports of its own modules do not count)."""
    deps = set()
    for f in _files(module):
        top = 2 if f.parent != PKG else 1  # the package's level seen from this file
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == top:
                deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
    return deps - {module}


def test_the_import_graph_has_no_cycle():
    graph = {m: _imports(m) for m in MODULES}
    assert all(d in MODULES for deps in graph.values() for d in deps)
    done, order = set(), []

    def visit(m, path):
        assert m not in path, f"import cycle: {' -> '.join(path + [m])}"
        if m in done:
            return
        for d in sorted(graph[m]):
            visit(d, path + [m])
        done.add(m)
        order.append(m)

    for m in MODULES:
        visit(m, [])
    assert len(order) == len(MODULES)


def test_the_package_docstring_names_every_module():
    for m in MODULES:
        assert f"``{m}``" in interpretgan.__doc__, m


def test_each_choice_is_defined_once():
    assert params.allowed_choices() == {"profile": tuple(profiles.PROFILES), "pooling": models.POOLINGS,
                                        "training": training.TRAININGS}
    # no other module spells the tuples out again
    spelled = {r'\(\s*"max",\s*"avg"\s*\)': "models", r'\(\s*"natural",\s*"atta"\s*\)': "training",
               r'\(\s*"mnist",\s*"cifar10",\s*"celeba"\s*\)': "data", r'\(\s*"mnist",\s*"celeba"\s*\)': "params", r'\(\s*"smoke",\s*"default",\s*"paper"\s*\)': None,
               r'\[\s*"max",\s*"avg"\s*\]': None, r'\[\s*"smoke",\s*"default",\s*"paper"\s*\]': None}
    for pattern, home in spelled.items():
        found = [m for m in MODULES if re.search(pattern, _source(m))]
        assert found == ([home] if home else []), (pattern, found)
    assert data.DATASETS == ("mnist", "cifar10", "celeba")
    assert set(params.EXPLAINED_DATASETS) <= set(data.DATASETS)
    # one grammar of attack names, used by params and the attacks themselves
    assert sum("re.compile" in _source(m) for m in MODULES) == 1
    assert attacks.parse_attack_name("mpgd20") == ("mpgd", 20) and attacks.parse_attack_name("FGSM") == ("fgsm", 1)
    for bad in ("pgd0", "pgd", "cw", "pgd-1"):
        assert not attacks.ATTACK_NAME.match(bad)
        try:
            params.parse_attacks(bad)
        except params.ParameterError:
            pass
        else:
            raise AssertionError(f"params accepted {bad!r}")


def test_attacks_take_numbers_and_params_parse_strings():
    import pytest

    assert attacks.PGD(0.3).eps == 0.3
    with pytest.raises(ValueError, match="eps"):
        attacks.PGD("8/255")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        attacks.FGSM(1.5)
    assert attacks.make_attack("pgd40", params.parse_epsilon("8/255")).eps == pytest.approx(8 / 255)
    with pytest.raises(ValueError, match="profile"):
        profiles.get_profile("huge")


def test_headless_runs_get_text_progress_bars(monkeypatch):
    from tqdm.std import tqdm as text

    from interpretgan import progress

    monkeypatch.setenv(progress.TEXT_ENV, "1")
    bar = progress.tqdm(range(3), disable=True)
    assert type(bar) is text  # text, so a stored notebook output keeps the finished bar
    monkeypatch.delenv(progress.TEXT_ENV)
    bar = progress.tqdm(range(3), disable=True)
    assert isinstance(bar, text)  # tqdm.auto's choice (a subclass in a notebook, text elsewhere)


def test_distributed_offers_and_accepts_only_the_datasets_with_an_atta_schedule(capsys):
    """`torchrun ... -m interpretgan.distributed --dataset celeba` was offered by --help and always failed after the
    process group started (the CelebA model is trained naturally only): the parser now refuses it and says why."""
    import pytest

    from interpretgan import distributed

    assert distributed.atta_datasets() == ["mnist", "cifar10"]
    with pytest.raises(SystemExit) as stop:
        distributed.main(["--dataset", "celeba"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --dataset: 'celeba' cannot be trained with ATTA here" in err and "naturally only" in err
    assert "choose from mnist, cifar10" in err
    with pytest.raises(SystemExit):
        distributed.main(["--help"])
    out = capsys.readouterr().out
    assert "{mnist,cifar10}" in out and "celeba" in out.split("--dataset {mnist,cifar10}")[-1]  # its help says why


def test_interpretgan_gan_is_split_into_short_functions():
    """``gan`` is a package a reader can follow (networks, explainer, losses, fit): no function or method in it
    runs over 60 lines of code (its docstring not counted)."""
    assert {f.stem for f in _files("gan")} == {"__init__", "networks", "explainer", "losses", "fit"}
    for f in _files("gan"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = node.body[0] if ast.get_docstring(node) else None
                lines = node.end_lineno - node.lineno + 1 - ((doc.end_lineno - doc.lineno + 1) if doc else 0)
                assert lines <= 60, f"{f.name}: {node.name} has {lines} lines of code"
