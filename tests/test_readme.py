"""README.md's commands run as written: the make targets and variables its shell blocks use are
the Makefile's, each `python -m` command's module (and subcommand) answers --help and knows
the flags the README gives it, the repository paths it names exist, every SIQ_* variable it
names is read somewhere in the repository, and the settings table lists each variable of the
two settings classes once. The README stays a manual: at most 300 lines. Nothing here starts
a service; the --help runs are the only processes."""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from client.settings import ClientSettings
from server.service.settings import ServerSettings
from tests.conftest import REPO_ROOT
from tests.test_cli_help import help_of

README = REPO_ROOT / "README.md"
MAX_LINES = 300
SHELL_BLOCK = re.compile(r"^```(?:sh|bash|shell|console)\n(.*?)^```", re.M | re.S)
OPERATORS = {"&&", "||", "|", ";", "&"}
REPO_PATH = re.compile(r"^(?:\.ci|bench|client|docs|scripts|server|shared|tests)/[\w./-]*$")
SIQ_NAME = re.compile(r"\bSIQ_[A-Z0-9_]*[A-Z0-9]\b")
# where a variable counts as read: code and the files that configure it, not the docs
CODE_SUFFIXES = {".py", ".yml", ".yaml", ".toml", ".sh", ".c", ".h"}
CODE_NAMES = {"Makefile", "Dockerfile", "run"}
SKIP_DIRS = {".git", ".venv", "var", "artifacts", "node_modules", "__pycache__", "docs"}


def readme() -> str:
    return README.read_text()


def shell_commands(text: str) -> list[list[str]]:
    """Each simple command of the README's shell blocks as its words: backslash-continued
    and quote-spanning lines joined, comments dropped, split at ;, &&, || and |."""
    commands: list[list[str]] = []
    for block in SHELL_BLOCK.findall(text):
        pending = ""
        for line in block.splitlines():
            pending += line + "\n"
            if line.endswith("\\"):
                continue
            try:
                source = pending.replace("\\\n", " ")  # a continued line goes on
                lexer = shlex.shlex(source, posix=True, punctuation_chars=";&|")
                lexer.whitespace_split = True
                lexer.commenters = "#"
                words = list(lexer)
            except ValueError:  # a quote still open: the command goes on
                continue
            pending = ""
            current: list[str] = []
            for word in [*words, ";"]:
                if word in OPERATORS:
                    if current:
                        commands.append(current)
                    current = []
                else:
                    current.append(word)
        assert not pending.strip(), f"unterminated command in a shell block: {pending!r}"
    return commands


def program(words: list[str]) -> list[str]:
    """The command without its leading VAR=value assignments (and `env`)."""
    rest = list(words)
    while rest and (re.match(r"^[A-Za-z_]\w*=", rest[0]) or rest[0] == "env"):
        rest.pop(0)
    return rest


def makefile() -> tuple[set[str], set[str], str]:
    """(rule targets, variables, text) of the Makefile."""
    text = (REPO_ROOT / "Makefile").read_text()
    targets = {
        name
        for line in re.findall(r"^([\w. $()/-]+?)\s*:(?!=)", text, re.M)
        for name in line.split()
    }
    variables = set(re.findall(r"^([A-Za-z_]\w*)\s*(?:\?|:|\+)?=", text, re.M))
    variables |= set(re.findall(r"\$\(([A-Za-z_]\w*)\)", text))
    return targets, variables, text


@cache
def help_text(*args: str) -> str:
    """`python -m args... --help`, which must succeed (once per command for the module)."""
    return help_of(*args)


def check_flags(words: list[str], help: str, where: str) -> None:
    for word in words:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert re.search(rf"{re.escape(flag)}\b", help), f"{where} has no {flag}"


def is_python(word: str) -> bool:
    return Path(word).name in ("python", "python3")


def test_the_readme_is_a_manual_of_at_most_300_lines() -> None:
    lines = readme().count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines; dated figures go to bench/results/"


def test_make_targets_and_variables_exist() -> None:
    targets, variables, text = makefile()
    used = [program(c) for c in shell_commands(readme())]
    makes = [c for c in used if c and c[0] == "make"]
    assert makes, "the README shows no make command"
    for command in makes:
        for word in command[1:]:
            if word.startswith("-"):
                continue
            name, eq, value = word.partition("=")
            if not eq:
                assert name in targets, f"`{' '.join(command)}`: no target {name} in the Makefile"
                continue
            assert name in variables, f"`{' '.join(command)}`: the Makefile has no {name}"
            # flags passed through a variable reach the module the recipe runs with it
            recipe = re.search(rf"-m ([\w.]+)[^\n]*\$\({name}\)", text)
            if recipe and "--" in value:
                module = recipe.group(1)
                check_flags(shlex.split(value), help_text(module), f"python -m {module}")


def test_python_commands_exist_with_their_flags() -> None:
    commands = [program(c) for c in shell_commands(readme())]
    pythons = [c for c in commands if len(c) > 2 and is_python(c[0]) and c[1] == "-m"]
    assert pythons, "the README shows no python -m command"
    for command in pythons:
        module, rest = command[2], command[3:]
        if module == "pip":
            continue
        # a first word that is neither a flag nor a file is a subcommand
        if rest and re.fullmatch(r"[a-z][a-z0-9-]*", rest[0]):
            args: tuple[str, ...] = (module, rest[0])
        else:
            args = (module,)
        help = help_text(*args)
        # argparse answers --help before it refuses an unknown word: the usage line must
        # be the subcommand's own
        usage = help.split("\n", 1)[0]
        if len(args) == 2:
            assert re.search(rf"\b{re.escape(args[1])}\b", usage), f"no {' '.join(args)}: {usage}"
        check_flags(rest, help, f"python -m {' '.join(args)}")


def test_repository_paths_exist() -> None:
    words = [w for c in shell_commands(readme()) for w in c]
    # also the paths in backticks in the prose
    words += re.findall(r"`([^`\s]+)`", readme())
    for word in words:
        path = word.split("=", 1)[-1].split(":", 1)[0].rstrip(".,")
        if REPO_PATH.match(path) and "*" not in path and "<" not in path:
            assert (REPO_ROOT / path).exists(), f"the README names {path}, which is not there"


def code_text() -> str:
    parts = []
    for path in REPO_ROOT.rglob("*"):
        if SKIP_DIRS.intersection(path.relative_to(REPO_ROOT).parts) or not path.is_file():
            continue
        is_code = path.suffix in CODE_SUFFIXES or path.name in CODE_NAMES
        if is_code and path != Path(__file__).resolve():
            parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


def test_every_siq_variable_named_is_read_somewhere() -> None:
    code = code_text()
    settings = {n for s in (ServerSettings, ClientSettings) for ns in env_names(s) for n in ns}
    named = set(SIQ_NAME.findall(readme()))
    missing = sorted(n for n in named if n not in settings and n not in code)
    assert not missing, f"the README names variables nothing reads: {missing}"


def env_names(settings: type[BaseSettings]) -> list[list[str]]:
    """Each field's environment names, the one to document first (its aliases after it)."""
    prefix = settings.model_config.get("env_prefix", "")
    names = []
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            choices = [c for c in alias.choices if isinstance(c, str) and c.isupper()]
        elif isinstance(alias, str):
            choices = [alias]
        else:
            choices = [f"{prefix}{field_name}".upper()]
        names.append(choices)
    return names


def settings_table() -> list[str]:
    """The SIQ_* names in the first column of the README's "Settings" table, in order."""
    section = re.search(r"^## Settings\n(.*?)(?=^## )", readme(), re.M | re.S)
    assert section, "the README has no '## Settings' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("| `SIQ_")]
    return [name for row in rows for name in SIQ_NAME.findall(row.split("|")[1])]


@pytest.mark.parametrize("settings", [ServerSettings, ClientSettings])
def test_the_settings_table_lists_each_variable_once(settings: type[BaseSettings]) -> None:
    table = settings_table()
    duplicated = sorted({n for n in table if table.count(n) > 1})
    assert not duplicated, f"listed twice in the settings table: {duplicated}"
    for names in env_names(settings):
        assert names[0] in table, f"{settings.__name__}'s {names[0]} is not in the settings table"


def test_the_settings_table_names_only_what_the_services_read() -> None:
    known = {n for s in (ServerSettings, ClientSettings) for ns in env_names(s) for n in ns}
    services = "\n".join(
        p.read_text() for d in ("server", "client") for p in (REPO_ROOT / d).rglob("*.py")
    )
    strays = [n for n in settings_table() if n not in known and f'"{n}"' not in services]
    assert not strays, f"the settings table lists variables no service reads: {strays}"
