"""Build the processor's Lambda bundle on this machine (no Docker): copy processor/, pip-install its deps.

The bundle's root holds the `processor` package (the handler is `processor.handler.handler`) next to the
packages of processor/requirements.txt, installed as wheels for Lambda's arm64 Linux and Python version.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
PROCESSOR_DIR = REPO_ROOT / "processor"
REQUIREMENTS_FILE = "requirements.txt"

# Lambda's arm64 (Graviton) runtime: manylinux2014 wheels, and the interpreter version of the runtime below.
LAMBDA_PYTHON_VERSION = "3.14"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
PIP_PLATFORM = "manylinux2014_aarch64"
# pip resolving and downloading a handful of wheels; generous, but a hung index must not hang `cdk synth`.
PIP_TIMEOUT_SECONDS = 600

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")


class BundlingError(RuntimeError):
    """The processor bundle could not be built; the message says which step failed and how."""


def pip_command(requirements: Path, target: Path) -> list[str]:
    """The pip invocation that installs `requirements` for Lambda's platform into `target`."""
    return [
        sys.executable, "-m", "pip", "install",
        "--requirement", str(requirements),
        "--target", str(target),
        "--platform", PIP_PLATFORM,
        "--implementation", "cp",
        "--python-version", LAMBDA_PYTHON_VERSION,
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--quiet",
    ]  # fmt: skip


@jsii.implements(ILocalBundling)
class ProcessorBundling:
    """Local bundling of processor/; with `install_requirements=False` only the package is copied.

    Skipping pip keeps tests and local (moto) deploys offline; a bundle built that way lacks the
    processor's third-party packages and is not meant for a real Lambda.
    """

    def __init__(self, *, install_requirements: bool = True) -> None:
        self.install_requirements = install_requirements

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_: Any) -> bool:
        out = Path(output_dir)
        shutil.copytree(PROCESSOR_DIR, out / "processor", ignore=_IGNORED, dirs_exist_ok=True)
        requirements = PROCESSOR_DIR / REQUIREMENTS_FILE
        if not self.install_requirements:
            return True
        if not requirements.is_file():
            raise BundlingError(f"{requirements} is missing: the processor's dependencies cannot be bundled")
        command = pip_command(requirements, out)
        try:
            # The command is built from constants and repository paths, never from user input.
            subprocess.run(command, check=True, timeout=PIP_TIMEOUT_SECONDS, capture_output=True, text=True)  # noqa: S603
        except subprocess.CalledProcessError as exc:
            raise BundlingError(
                f"pip could not install {requirements} for {PIP_PLATFORM}/Python {LAMBDA_PYTHON_VERSION} "
                f"(exit {exc.returncode}): {exc.stderr.strip()[-2000:]}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise BundlingError(f"pip did not finish within {PIP_TIMEOUT_SECONDS}s: {' '.join(command)}") from exc
        return True


def processor_code(*, install_requirements: bool) -> lambda_.Code:
    """The processor's Lambda code asset, bundled locally (Docker is only the fallback CDK insists on)."""
    return lambda_.Code.from_asset(
        str(PROCESSOR_DIR),
        # The output hash: the same source bundled with and without dependencies must not share a hash.
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            image=LAMBDA_RUNTIME.bundling_image,
            local=ProcessorBundling(install_requirements=install_requirements),
            command=["bash", "-c", _docker_fallback_command()],
        ),
    )


def _docker_fallback_command() -> str:
    # Only used if local bundling returned False, which ours never does; kept equivalent for clarity.
    return (
        "mkdir -p /asset-output/processor && cp -r /asset-input/. /asset-output/processor/ && "
        f"pip install -r /asset-input/{REQUIREMENTS_FILE} -t /asset-output"
    )
