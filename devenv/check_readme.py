"""Run the README's examples against the stack devenv/up left, and fail loudly if one fails.

Every ```sh, ```python and ```yaml block in the README needs a marker on the line
before it, so no example escapes the check by accident:

    <!-- check-readme: run -->                      run it (sh in bash -eu, python in .venv)
    <!-- check-readme: run in the directory of NAME -->   the same, where NAME was written
    <!-- check-readme: file NAME -->                write it to NAME in a scratch directory
    <!-- check-readme: skip: REASON -->             do not run it, and say why

Each block runs on its own, in a fresh shell started in the repository, with no AWS_*
or DOCKER_HOST variables and the system's PATH: what it needs, it must say (the sh
examples source devenv/up's env file; the Python ones give their settings). The
README is written for the default stack; when devenv/up ran with another
FAKESTOR_LISTEN or FAKESTOR_DATA_DIR, the endpoint and the env file's path are
replaced in the examples, and the check says so. With --banner FILE it also runs the
commands devenv/up printed in its closing banner (FILE holds up's output).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ENDPOINT = "http://127.0.0.1:8773"
DEFAULT_ENV_FILE = "/var/lib/fakestor/env"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHECKED_LANGUAGES = ("sh", "bash", "python", "yaml", "yml")
TIMEOUT = 600.0

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*check-readme:\s*(.*?)\s*-->\s*$")
_BANNER_COMMAND = re.compile(r"^  \$ (.*)$")


@dataclass
class Example:
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str | None


def parse_examples(readme: str) -> list[Example]:
    """The fenced blocks with a language we check, each with the marker before it."""
    examples: list[Example] = []
    lines = readme.splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index].lstrip())
        if fence is None:
            index += 1
            continue
        language, start = fence.group(1), index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        if language not in CHECKED_LANGUAGES:
            continue
        previous = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = _MARKER.match(previous.strip())
        examples.append(
            Example(start + 1, language, "\n".join(body) + "\n", marker and marker.group(1))
        )
    return examples


def banner_commands(up_output: str) -> str:
    """The `  $ command` lines of devenv/up's closing banner, as one script."""
    banner = up_output.rsplit("fakestor is up", 1)[-1]
    commands = [m.group(1) for m in map(_BANNER_COMMAND.match, banner.splitlines()) if m]
    if not commands:
        raise SystemExit("check-readme: no commands in the banner of devenv/up's output")
    return "\n".join(commands) + "\n"


def clean_environment() -> dict[str, str]:
    """A fresh root shell's environment: nothing that points at the stack already."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AWS_")
        and key not in ("DOCKER_HOST", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    environment["PATH"] = SYSTEM_PATH
    return environment


class Checker:
    def __init__(self, root: Path, venv: Path, endpoint: str, env_file: Path) -> None:
        self.root = root
        self.venv = venv
        self.replacements = {
            old: new
            for old, new in ((DEFAULT_ENDPOINT, endpoint), (DEFAULT_ENV_FILE, str(env_file)))
            if old != new
        }
        self.scratch = Path(tempfile.mkdtemp(prefix="check-readme-"))
        self.written: dict[str, Path] = {}
        self.failures: list[str] = []
        self.ran = 0
        self.skipped = 0

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _substitute(self, text: str) -> str:
        for old, new in self.replacements.items():
            text = text.replace(old, new)
        return text

    def check(self, example: Example, where: str) -> None:
        marker = example.marker
        title = f"{where}:{example.line} ({example.language})"
        if marker is None:
            self._fail(title, "no <!-- check-readme: ... --> marker on the line before it")
            return
        if marker.startswith("skip:"):
            self.skipped += 1
            print(f"==> {title}: skipped: {marker.removeprefix('skip:').strip()}")
            return
        if marker.startswith("file "):
            name = marker.removeprefix("file ").strip()
            path = self.scratch / name
            path.write_text(self._substitute(example.text))
            self.written[name] = path
            print(f"==> {title}: written to {name}")
            return
        cwd = self.root
        run_in = re.fullmatch(r"run in the directory of (\S+)", marker)
        if run_in:
            if run_in.group(1) not in self.written:
                self._fail(title, f"{run_in.group(1)} was not written by an earlier block")
                return
            cwd = self.written[run_in.group(1)].parent
        elif marker != "run":
            self._fail(title, f"unknown marker {marker!r}")
            return
        if example.language in ("yaml", "yml"):
            self._fail(title, "a yaml block can only be written to a file")
            return
        self.run(title, example.language, self._substitute(example.text), cwd)

    def run(self, title: str, language: str, text: str, cwd: Path) -> None:
        self.ran += 1
        if language == "python":
            command = [str(self.venv / "bin" / "python"), "-c", text]
        else:
            command = ["bash", "-euo", "pipefail", "-c", text]
        print(f"==> {title}: running", flush=True)
        started = time.monotonic()
        try:
            result = subprocess.run(
                command, cwd=cwd, env=clean_environment(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired as timeout:
            output = timeout.output if isinstance(timeout.output, str) else ""
            print(_indent(output))
            self._fail(title, f"still running after {TIMEOUT:.0f}s")
            return
        print(_indent(result.stdout), end="")
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            self._fail(title, f"exited with {result.returncode} after {elapsed:.1f}s:\n{text}")
        else:
            print(f"    ok ({elapsed:.1f}s)")

    def _fail(self, title: str, why: str) -> None:
        self.failures.append(title)
        print(f"!!! {title} FAILED: {why}", flush=True)


def _indent(text: str) -> str:
    return "".join(f"    | {line}\n" for line in text.splitlines())


def _stack_answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/latest/meta-data/instance-id", timeout=5):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, required=True)
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument("--banner", type=Path, help="devenv/up's output: run its banner too")
    args = parser.parse_args()

    if not args.env_file.exists() or not _stack_answers(args.endpoint):
        print(
            f"check-readme: no stack at {args.endpoint} with {args.env_file}; run devenv/up first",
            file=sys.stderr,
        )
        return 2
    readme = args.readme.absolute()
    checker = Checker(readme.parent, args.venv.absolute(), args.endpoint, args.env_file)
    for old, new in checker.replacements.items():
        print(f"==> the examples run with {old} replaced by {new}")
    try:
        for example in parse_examples(readme.read_text()):
            checker.check(example, readme.name)
        if args.banner:
            text = banner_commands(args.banner.read_text())
            checker.run(f"{args.banner} (devenv/up's banner)", "sh", text, checker.root)
    finally:
        checker.close()
    summary = f"{checker.ran} run, {len(checker.failures)} failed, {checker.skipped} skipped"
    if checker.failures:
        print(f"check-readme: FAILED: {', '.join(checker.failures)} ({summary})")
        return 1
    print(f"check-readme: every example ran ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
