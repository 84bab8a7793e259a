"""The package's layering rules, checked on its source: only ``io/`` (and the network
``acquisition/`` subpackage) touch files; only the command line changes process-wide settings."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "s2landcover"
# Opening, reading, writing, moving or deleting files (the grep of issue 14).
FILE_ACCESS = re.compile(
    r"\bopen\(|rasterio\.open|torch\.(load|save)|np\.(load|save)|read_parquet|to_parquet|"
    r"read_file\(|to_file\(|shutil|os\.replace|pyogrio|\.unlink\(|\.rename\(|"
    r"\.(write|read)_(text|bytes)\("
)
# Settings of the whole process: the CLI's (from the rule's {threads}), never a library function's.
PROCESS_SETTINGS = re.compile(r"set_num_threads|cudnn\.benchmark|matplotlib\.use\(|mallopt")
# A data-loader worker_init_fn sets its own worker process: one intra-op thread each.
ALLOWED_SETTINGS = {("training/data.py", "torch.set_num_threads(1)")}


def _lines(skip: tuple[str, ...]) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(skip):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found.append((relative, number, line))
    return found


def test_only_io_and_acquisition_touch_files() -> None:
    offenders = [
        f"{path}:{number}: {line.strip()}"
        for path, number, line in _lines(("io/", "acquisition/"))
        if FILE_ACCESS.search(line)
    ]
    assert offenders == [], "file access outside io/:\n" + "\n".join(offenders)


def test_only_the_cli_changes_process_wide_settings() -> None:
    offenders = [
        f"{path}:{number}: {line.strip()}"
        for path, number, line in _lines(("cli.py",))
        if PROCESS_SETTINGS.search(line) and (path, line.strip()) not in ALLOWED_SETTINGS
    ]
    assert offenders == [], "process-wide settings outside the CLI:\n" + "\n".join(offenders)
