"""The main job's figures hold for the versions they were measured with: `make install` installs those,
and the job says when an install differs."""
import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import pytest

from opid_train.cli.main import MEASURED_VERSIONS, version_drift

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in MEASURED_VERSIONS.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def test_the_measured_versions_pin_what_the_tiny_policy_and_the_games_depend_on():
    assert {"transformers", "tokenizers", "textworld", "alfworld"} <= set(pins())


def test_an_install_with_other_versions_is_named_package_by_package():
    measured = pins()

    def installed(name):
        if name == "alfworld":
            raise importlib.metadata.PackageNotFoundError(name)
        return {"transformers": "9.9.9", "tokenizers": measured["tokenizers"] + "+local"}.get(name, measured[name])

    assert version_drift(installed=installed) == [
        f"transformers 9.9.9 (measured: {measured['transformers']})", f"alfworld none (measured: {measured['alfworld']})"]


def test_an_install_of_exactly_the_measured_versions_has_no_drift():
    assert version_drift(installed=pins().__getitem__) == []


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_install_holds_the_extras_to_the_measured_versions(tmp_path):
    plan = subprocess.run(["make", "-n", "install", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.splitlines()
    extras = [line for line in plan if "pip install" in line and ".[all," in line]
    assert len(extras) == 1 and f"-c {MEASURED_VERSIONS.relative_to(ROOT)}" in extras[0]
