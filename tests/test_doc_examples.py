"""Every Python example in README.md and docs/ runs, as written, against the demo farm
(`make run`), as a reader who followed the README runs it: BORUTA_CONFIG set to the config
file the farm wrote, in a fresh directory. A block that is deliberately not runnable (a
fragment) says so just above its fence with ``<!-- example: not run, WHY -->``; any other
block must run. Where a ```console block of output alone follows an example, the example
prints those lines (numbers and the farm's name aside).

Shell sessions marked ``<!-- example: run -->`` (cheap, non-interactive schedctl commands)
run too: each command exits with the status the docs show (``echo $?``, else 0), and
schedctl's own lines ("request ...", "job ...", the counts of status) appear as shown;
what the board prints (a kernel version) is not compared."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from demo_farm_kit import DemoFarm

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = {"python", "py", "python3", "pycon"}
NOT_RUN = re.compile(r"<!-- example: not run, (?P<why>\S.*?) -->")
RUN = "<!-- example: run -->"
SCHEDCTL_LINE = re.compile(r"^(request|job|boards:|requests:)\s")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced code block of a Markdown file."""

    path: Path
    line: int  # of the opening fence, from 1
    lang: str
    code: str
    marker: str  # the line above the fence, stripped

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = len(opening["indent"])
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        found.append(Block(path, i + 1, opening["lang"], code, above))
        i = end + 1
    return found


def examples(found: list[Block]) -> list[Block]:
    """The Python blocks to run: all but those marked as not runnable."""
    return [b for b in found if b.lang in PYTHON and not NOT_RUN.fullmatch(b.marker)]


ALL = [block for path in DOCS for block in blocks(path)]
EXAMPLES = examples(ALL)
SESSIONS = [b for b in ALL if b.marker == RUN]


def output_after(example: Block) -> str | None:
    """The output the docs show for an example: the ```console block right after it, when
    that block holds output alone (no "$ " prompt)."""
    following = [b for b in ALL if b.path == example.path and b.line > example.line]
    if not following or following[0].lang != "console":
        return None
    text = example.path.read_text().splitlines()
    between = text[example.line + example.code.count("\n") + 1 : following[0].line - 1]
    shown = following[0].code
    if any(line.strip() for line in between) or any(
        line.startswith("$ ") for line in shown.splitlines()
    ):
        return None
    return shown


def masked(text: str, farm: DemoFarm) -> list[str]:
    """Lines with the farm's name as the docs' farm has it, and every number as N."""
    return [re.sub(r"\d+", "N", line.replace(farm.name, "farm")) for line in text.splitlines()]


def test_the_docs_have_python_examples() -> None:
    # The extraction itself: if it found nothing, the test below would prove nothing.
    assert {b.path.name for b in EXAMPLES} >= {"README.md", "user-guide.md"}


def test_a_marked_fragment_is_left_out_and_any_other_block_is_run(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Text.\n\n<!-- example: not run, needs a board named x -->\n```python\nx()\n```\n\n"
        "```python\nprint(1)\n```\n\n  ```py\n  print(2)\n  ```\n```sh\nls\n```\n"
    )
    assert [(b.line, b.code) for b in examples(blocks(doc))] == [
        (8, "print(1)\n"),
        (12, "print(2)\n"),
    ]


def test_every_marker_is_well_formed_and_above_a_block_it_fits() -> None:
    marked = {(b.path, b.marker): b for b in ALL if b.marker.startswith("<!-- example:")}
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip().startswith("<!-- example:"):
                continue
            where = f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            block = marked.get((path, line.strip()))
            assert block is not None, f"{where} is not right above a code block"
            if line.strip() == RUN:
                assert block.lang == "console", f"{where}: only console sessions are run"
            else:
                assert NOT_RUN.fullmatch(line.strip()), f"{where}: say why it is not run"
                assert block.lang in PYTHON, f"{where}: only Python blocks are run"


@pytest.fixture
def reader(demo_farm: DemoFarm, tmp_path: Path) -> dict[str, str]:
    """The environment of a reader at the README's farm, once its boards are at rest as the
    docs show them. Unbuffered, as on a terminal: prints and streamed output interleave as
    the docs show them."""
    demo_farm.wait_idle()
    env = demo_farm.env(tmp_path, PYTHONUNBUFFERED="1")
    return {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[b.name for b in EXAMPLES])
def test_the_example_runs_against_the_demo_farm(
    example: Block, demo_farm: DemoFarm, reader: dict[str, str], tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", example.code],
        cwd=tmp_path,
        env=reader,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (
        f"{example.name} does not run as written (fix the example, or mark a fragment with "
        f"<!-- example: not run, WHY -->):\n{done.stderr}"
    )
    shown = output_after(example)
    if shown is not None:
        assert masked(done.stdout, demo_farm) == masked(shown, demo_farm), done.stdout


def commands(session: Block) -> list[tuple[str, list[str]]]:
    """Each "$ " command of a console session with the lines the docs show after it."""
    found: list[tuple[str, list[str]]] = []
    for line in session.code.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        else:
            assert found, f"{session.name}: output before the first command"
            found[-1][1].append(line)
    return found


def test_the_docs_have_shell_sessions_to_run() -> None:
    assert {b.path.name for b in SESSIONS} >= {"README.md", "user-guide.md"}


@pytest.mark.parametrize("session", SESSIONS, ids=[b.name for b in SESSIONS])
def test_the_shell_session_runs_against_the_demo_farm(
    session: Block, demo_farm: DemoFarm, reader: dict[str, str]
) -> None:
    steps = commands(session)
    for i, (command, shown) in enumerate(steps):
        if command == "echo $?":
            continue
        done = subprocess.run(
            ["bash", "-c", f"{command} 2>&1"],
            cwd=ROOT,  # where the README's .venv/bin/schedctl is
            env=reader,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        then = steps[i + 1] if i + 1 < len(steps) else ("", [])
        expected = int(then[1][0]) if then[0] == "echo $?" else 0
        assert done.returncode == expected, (command, done.stdout)
        ours = [line for line in shown if SCHEDCTL_LINE.match(line)]
        got = [line for line in done.stdout.splitlines() if SCHEDCTL_LINE.match(line)]
        assert masked("\n".join(got), demo_farm) == masked("\n".join(ours), demo_farm), (
            command,
            done.stdout,
        )
