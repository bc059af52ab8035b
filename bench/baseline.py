"""Export this project at an earlier commit into bench/.work/, so that it can be measured beside the working tree.

The export is ``git archive`` of the commit (no worktree, so the repository's
own state is left alone), unpacked once into ``bench/.work/<commit>/`` and
reused by later runs; it runs with the same Python as the working tree.
"""

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(__file__).resolve().parent / ".work"
DONE = ".exported"


class UnknownCommit(ValueError):
    """The ref names no commit of this repository."""


def resolve(ref: str) -> str:
    """Return the full commit id that ref names."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if found.returncode != 0:
        raise UnknownCommit(f"not a commit of this repository: {ref}")
    return found.stdout.strip()


def folder(commit: str) -> Path:
    """Return the folder that holds the export of commit, exporting it first if needed."""
    target = WORK / commit
    if (target / DONE).exists():
        return target
    WORK.mkdir(parents=True, exist_ok=True)
    # Unpacked beside the target and renamed into place, so a folder that exists is complete.
    scratch = Path(tempfile.mkdtemp(prefix=f"{commit[:7]}-", dir=WORK))
    try:
        archive = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=ROOT, stdout=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
                tar.extractall(scratch, filter="data")
        finally:
            archive.stdout.close()
            if archive.wait() != 0:
                raise RuntimeError(f"git archive {commit} failed")
        (scratch / DONE).write_text(commit + "\n")
        if not (target / DONE).exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / DONE).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
