"""The processor's local bundling (no Docker) and the app's context flags."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest

from infra import bundling
from infra.app import CONTEXT_RETAIN_DATA, context_flag
from infra.bundling import LAMBDA_PYTHON_VERSION, LAMBDA_RUNTIME, PIP_PLATFORM, BundlingError, ProcessorBundling
from tests.infra.conftest import Synthesized


@pytest.fixture
def processor_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in processor/ package with a byte-code cache that must not be bundled."""
    src = tmp_path / "processor"
    (src / "__pycache__").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "handler.py").write_text("def handler(event, context):\n    return {}\n")
    (src / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"\0")
    monkeypatch.setattr(bundling, "PROCESSOR_DIR", src)
    return src


def test_pip_installs_wheels_for_lambdas_platform_and_python(tmp_path: Path) -> None:
    """pip targets manylinux2014 aarch64 wheels only, for the runtime's Python version, into the bundle."""
    command = bundling.pip_command(tmp_path / "requirements.txt", tmp_path / "out")
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    pairs = dict(itertools.pairwise(command))
    assert pairs["--platform"] == PIP_PLATFORM == "manylinux2014_aarch64"
    assert pairs["--python-version"] == LAMBDA_PYTHON_VERSION
    assert pairs["--target"] == str(tmp_path / "out")
    assert "--only-binary=:all:" in command
    assert LAMBDA_RUNTIME.name == f"python{LAMBDA_PYTHON_VERSION}"


def test_skip_pip_copies_only_the_package(processor_dir: Path, tmp_path: Path) -> None:
    """Without pip the bundle root holds the processor package, minus byte-code caches."""
    out = tmp_path / "out"
    out.mkdir()
    assert ProcessorBundling(install_requirements=False).try_bundle(str(out), image=LAMBDA_RUNTIME.bundling_image)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "processor", "processor/__init__.py", "processor/handler.py",
    ]  # fmt: skip


def test_missing_requirements_file_is_an_error_naming_it(processor_dir: Path, tmp_path: Path) -> None:
    """Bundling for real without processor/requirements.txt fails and says which file is missing."""
    with pytest.raises(BundlingError, match=r"requirements\.txt is missing"):
        ProcessorBundling().try_bundle(str(tmp_path / "out"), image=LAMBDA_RUNTIME.bundling_image)


def test_pip_failure_is_reported_with_its_exit_code(processor_dir: Path, tmp_path: Path) -> None:
    """A requirement pip cannot parse fails the bundling with pip's exit code (no download attempted)."""
    (processor_dir / "requirements.txt").write_text("this is not a requirement ===\n")
    with pytest.raises(BundlingError, match=r"pip could not install .* \(exit [1-9]"):
        ProcessorBundling().try_bundle(str(tmp_path / "out"), image=LAMBDA_RUNTIME.bundling_image)


def test_synthesized_asset_holds_the_processor_package(synthesized: Synthesized) -> None:
    """The Lambda asset of the synthesized app is the bundled directory with processor/ at its root."""
    manifest = synthesized.assets_manifest(synthesized.local_stack)
    zips = [f for f in manifest["files"].values() if f["source"]["packaging"] == "zip"]
    assert len(zips) == 1
    root = synthesized.outdir / zips[0]["source"]["path"]
    assert (root / "processor").is_dir()
    assert sorted(p.name for p in root.iterdir()) == ["processor"]  # skipPip: no third-party packages


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("False", False), (True, True), ("1", True), ("no", False)])
def test_context_flags_accept_booleans_and_their_spellings(value: object, expected: bool) -> None:
    """`-c retainData=true` (a string) and cdk.json booleans both work."""
    app = cdk.App(context={CONTEXT_RETAIN_DATA: value})
    assert context_flag(app, CONTEXT_RETAIN_DATA) is expected


def test_context_flag_rejects_other_values() -> None:
    """A typo in a flag's value is an error naming the key, not a silent false."""
    app = cdk.App(context={CONTEXT_RETAIN_DATA: "ture"})
    with pytest.raises(ValueError, match="retainData"):
        context_flag(app, CONTEXT_RETAIN_DATA)
