"""Test-session settings shared by tests/ and the nbval runs of notebooks/.

Notebook kernels are subprocesses, so the settings are environment variables set here, at import,
before any kernel starts: every notebook runs at the smoke profile, and all artifacts of the session
go to a fresh temporary folder (never the developer's artifacts/), unless INTERPRETGAN_ARTIFACTS is
already set for the test run; that fresh folder is removed when the session ends (set
INTERPRETGAN_KEEP_TEST_ARTIFACTS=1 to keep it for a look).
"""
import atexit
import os
import shutil
import tempfile

import pytest

os.environ["INTERPRETGAN_PROFILE"] = "smoke"
if "INTERPRETGAN_ARTIFACTS" not in os.environ:
    # the session's own folder (up to 0.6 GB after a full run) goes when the session ends, unless asked to stay
    _SESSION_ARTIFACTS = tempfile.mkdtemp(prefix="interpretgan-test-")
    os.environ["INTERPRETGAN_ARTIFACTS"] = _SESSION_ARTIFACTS
    if not os.environ.get("INTERPRETGAN_KEEP_TEST_ARTIFACTS"):
        atexit.register(shutil.rmtree, _SESSION_ARTIFACTS, ignore_errors=True)
os.environ.setdefault("MPLBACKEND", "Agg")
# Progress bars redraw at most every 5 s in the kernels (tqdm reads TQDM_* defaults from the environment): a
# smoke cell that fits generators for minutes otherwise sends thousands of iopub messages while nbval waits for
# its reply, past ZeroMQ's 1,000-message high-water mark, and the dropped end-of-cell message fails the cell with
# "Timeout ... exceeded waiting for output" (05's Table 1 cell from an empty cache, stop 24).
os.environ.setdefault("TQDM_MININTERVAL", "5")

#: Seconds nbval waits for each of a cell's output messages after the cell's reply. nbval hard-codes 5
#: (computationalmodelling/nbval#136, #231), too short on a loaded 2-core machine. A longer wait alone did not
#: cure 05's "Timeout ... exceeded waiting for output" (stop 24: it failed at 60 s too); the message flood that
#: TQDM_MININTERVAL above limits is the likelier cause.
NBVAL_OUTPUT_TIMEOUT = 60


def pytest_collection_modifyitems(items):
    """Give every nbval cell :data:`NBVAL_OUTPUT_TIMEOUT` seconds per output message instead of nbval's 5, and
    skip the cells after a notebook's last ``NBVAL_CHECK_OUTPUT`` cell.

    nbval (``--nbval-lax``) compares only the marked cells; it would run the rest merely to see that they raise
    nothing, and ``tests/test_notebooks.py`` (papermill) and ``tests/test_browser.py`` already run every notebook
    to its end at the smoke profile and fail on any error. Running them a second time under nbval cost several
    minutes of a test suite that must stay within 30 minutes on CI's 2 cores.
    """
    cells: dict = {}
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT
        if hasattr(item, "cell") and hasattr(item, "options"):
            cells.setdefault(item.parent, []).append(item)
    for notebook_cells in cells.values():
        checked = [i for i, item in enumerate(notebook_cells) if item.options.get("check")]
        for item in notebook_cells[checked[-1] + 1 if checked else 0:]:
            item.add_marker(pytest.mark.skip(reason="after the last NBVAL_CHECK_OUTPUT cell: tests/test_notebooks.py "
                                                    "runs it (papermill, smoke)"))
