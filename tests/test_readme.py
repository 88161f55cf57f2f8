"""The README's two set-up commands stay true: CI runs the test one verbatim."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines[:16] if line.startswith("    python3 -m venv")]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    main_job, tests = _commands()
    assert main_job.endswith("scripts/train.py")
    assert tests.endswith("bash ci/test.sh")
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_readme_library_example_runs(capsys):
    text = (ROOT / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("\n```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    loss_line, gradcheck_line = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "'accuracy'" in loss_line
    assert max(eval(gradcheck_line).values()) < 1e-6
