"""MkDocs hook (mkdocs.yml `hooks:`): put the pipeline's plots on the site where `dvc repro` writes them.

MkDocs serves only files under docs_dir; the plots live in plots/ at the repository root. This adds
each plots/*.png to the site as `plots/<name>.png`, so a page links `plots/confusion.png` and shows
the current file, never a copy. A plot that `dvc repro` has not written yet is simply absent, and a
page that links it fails `mkdocs build --strict`, as a broken link should.
"""
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def on_files(files, config):
    for image in sorted((ROOT / "plots").glob("*.png")):
        files.append(File.generated(config, f"plots/{image.name}", abs_src_path=str(image)))
    return files
