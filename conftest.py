"""Test-session settings shared by tests/ and the nbval runs of notebooks/.

Notebook kernels are subprocesses, so the settings are environment variables set here, at import,
before any kernel starts: every notebook runs at the smoke profile, and all artifacts of the session
go to a fresh temporary folder (never the developer's artifacts/), unless INTERPRETGAN_ARTIFACTS is
already set for the test run.
"""
import os
import tempfile

os.environ["INTERPRETGAN_PROFILE"] = "smoke"
os.environ.setdefault("INTERPRETGAN_ARTIFACTS", tempfile.mkdtemp(prefix="interpretgan-test-"))
os.environ.setdefault("MPLBACKEND", "Agg")
