from typer.testing import CliRunner

from irtscope import __version__
from irtscope.cli import app


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_subcommands_listed() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "trials" in result.output and "imaging" in result.output


def test_library_error_is_one_escaped_line() -> None:
    """An IrtscopeError becomes one stderr line, exit 1; bracketed text is not Rich markup."""
    import subprocess
    import sys

    code = (
        "import typer\n"
        "from irtscope import DataError\n"
        "from irtscope.cli import main, trials_app\n"
        "@trials_app.command('boom')\n"
        "def boom() -> None:\n"
        "    raise DataError(\"lesion 'L[/x]' has an empty mask\")\n"
        "import sys; sys.argv = ['irtscope', 'trials', 'boom']\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: lesion 'L[/x]' has an empty mask"]
