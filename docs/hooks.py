"""mkdocs hook: the site shows the committed studies from where they are committed.

benchmark/results/ is served at results/ (each study's figures and its generated report: *.png, *.md), and
CHANGELOG.md at the root of the site, so the pages embed and link them without a copy in git. A study added
under benchmark/results/ is served with no change here.
"""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
SERVED = {".png", ".md"}  # the figures and the reports; the data (episodes.csv.gz, study.db) stays in the repository


def on_files(files, config):
    def serve(src_dir, path):
        files.append(File(path.relative_to(src_dir).as_posix(), str(src_dir), config["site_dir"],
                          config["use_directory_urls"]))

    for path in sorted((ROOT / "benchmark" / "results").rglob("*")):
        if path.is_file() and path.suffix in SERVED:
            serve(ROOT / "benchmark", path)
    serve(ROOT, ROOT / "CHANGELOG.md")
    return files
