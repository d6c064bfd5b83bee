"""`python -m client --help` and `python -m server --help` are for users: they say what the
service does and list every command (export-c, export-onnx, sign-bundle; quantize), and each
command's own --help works."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def help_of(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_client_help_lists_its_commands() -> None:
    text = help_of("client")
    assert "serves a quantised bundle" in text and "--port" in text
    for command in ("export-c", "export-onnx", "sign-bundle"):
        assert f"\n  {command} " in text, text
    assert "python -m client COMMAND --help" in text


def test_server_help_is_for_users_and_names_quantize() -> None:
    text = help_of("server")
    assert "\n  quantize " in text and "python -m server quantize --help" in text, text
    assert "create_app" not in text and "lifespan" not in text  # not the developer docstring


@pytest.mark.parametrize(
    "command",
    [
        ("client", "export-c"),
        ("client", "export-onnx"),
        ("client", "sign-bundle"),
        ("server", "quantize"),
    ],
)
def test_each_command_has_help(command: tuple[str, str]) -> None:
    assert f"usage: python -m {' '.join(command)}" in help_of(*command)
