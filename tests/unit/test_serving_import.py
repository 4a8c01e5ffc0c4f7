"""Serving never imports torch: checked in a fresh interpreter, where nothing else has loaded it."""

from __future__ import annotations

import subprocess
import sys


def test_serving_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import serving, serving.app, mamdr.commands.serve, serving.server, serving.composition, serving.reload\n"
        "from serving.app import create_app\n"
        "create_app()\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(len(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "0"
