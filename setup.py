"""Everything is declared in pyproject.toml; this adds ``lm_eval_calibration.pth`` to the wheel.

The ``.pth`` file lies at the root of site-packages, where the interpreter runs its one line at
start-up: ``import calib_tasks.harness.activation`` (see that module: it makes the package's tasks
visible to the plain ``lm_eval`` command of lm-eval 0.4.13, and costs nothing until lm_eval is
imported). Written to the wheel's root for a wheel, and to the editable wheel's root (the
``install`` command's ``install_lib``) for ``pip install -e``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_FILE = "lm_eval_calibration.pth"
PTH_LINE = "import calib_tasks.harness.activation\n"


class BuildPyWithPth(build_py):
    """``build_py`` that also writes ``PTH_FILE`` to the root of the wheel being built."""

    def run(self) -> None:
        super().run()
        root = self.get_finalized_command("install").install_lib if self.editable_mode else None
        target = Path(root or self.build_lib, PTH_FILE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(PTH_LINE, encoding="utf-8")

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib, PTH_FILE))]


setup(cmdclass={"build_py": BuildPyWithPth})
