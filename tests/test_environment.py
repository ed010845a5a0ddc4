"""The three descriptions of the environment stay in step."""
import re
import tomllib

from interpretgan.paths import REPO_ROOT


def _pyproject_pins():
    proj = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    reqs = proj["dependencies"] + [r for extra in proj["optional-dependencies"].values() for r in extra]
    return dict(r.split("==") for r in reqs)


def _yaml_pins(path):
    return dict(m.groups() for m in re.finditer(r"^\s*-\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", path.read_text(), re.M))


def test_everything_is_pinned_exactly():
    pins = _pyproject_pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    for name in ("jupyterlab", "papermill", "ipywidgets", "seaborn", "nbval", "scrapbook", "six", "captum",
                 "safetensors", "torchattacks"):
        assert name in pins, name


def test_environment_yml_and_binder_agree_with_pyproject():
    pins = _pyproject_pins()
    assert _yaml_pins(REPO_ROOT / "environment.yml") == pins
    assert (REPO_ROOT / "binder" / "environment.yml").read_text() == (REPO_ROOT / "environment.yml").read_text()


def test_binder_postbuild_installs_package_and_kernel():
    text = (REPO_ROOT / "binder" / "postBuild").read_text()
    lines = [l for l in text.splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "set -e"
    assert "pip install --no-deps -e ." in text and "ipykernel install" in text and "--name interpretgan" in text


def test_notebooks_use_the_named_kernel():
    import json

    for nb in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        assert json.loads(nb.read_text())["metadata"]["kernelspec"]["name"] == "interpretgan", nb.name


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO_ROOT / "README.md").read_text()
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_readme_parameter_table_matches_every_notebook():
    """The README's parameters table is true: each notebook's parameters cell defines exactly the marked names."""
    import re

    import nbformat

    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("<!-- parameters:begin -->")[1].split("<!-- parameters:end -->")[0]
    rows = [r.split("|")[1:-1] for r in block.strip().splitlines()[2:]]
    header = [h.strip() for h in block.strip().splitlines()[0].split("|")[1:-1]]
    columns = header[1:-1]
    for k, number in enumerate(columns):
        path = next((REPO_ROOT / "notebooks").glob(f"{number}_*.ipynb"))
        cell = next(c for c in nbformat.read(str(path), as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        defined = set(re.findall(r"^([a-z_]+) = ", cell.source, flags=re.M))
        marked = {r[0].strip().strip("`") for r in rows if r[1 + k].strip() == "x"}
        assert defined == marked, (path.name, defined ^ marked)


def test_readme_shipped_weights_block_is_generated_from_the_manifest():
    from interpretgan import cache

    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("<!-- shipped:begin -->\n")[1].split("\n<!-- shipped:end -->")[0]
    assert block == cache.shipped_summary(), "run: python -m interpretgan.cache --write-readme"
