"""What a batch run scores: the recordings of an input folder, each a `Job`, and everything else named as skipped."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from har.garmin import find_garmin_pairs
from har.scoring import FusedTable, GarminPair, fused_index
from har.subject import SubjectIdError, check_subject

# Files that belong to a fused folder (stages.fuse writes them) but are not recordings themselves.
FUSED_FOLDER_FILES = {"index.csv", "quality.json"}


@dataclass
class Job:
    """One recording to score: a Garmin pair, or a fused table with what stages.fuse recorded beside it."""

    name: str
    sources: list[Path]
    kind: str  # "garmin" | "fused"
    start_time: str | None = None  # fused tables: from index.csv (a pair's workbooks carry their own)
    fusion: dict | None = None  # fused tables: the entry of quality.json
    subject: str | None = None  # whose recording, with --store (--subject, or the subject's folder)

    @property
    def key(self) -> str:
        """Unique in a run: recordings of two subjects may carry the same session name."""
        return f"{self.subject}/{self.name}" if self.subject else self.name

    def source(self, timezone: str | None) -> GarminPair | FusedTable:
        """What har.scoring.prepare reads (`timezone`: the wall-clock zone of a pair's workbooks)."""
        if self.kind == "garmin":
            return GarminPair(*self.sources, timezone=timezone, recording_id=self.name)
        return FusedTable.read(self.sources[0], start_time=self.start_time, fusion=self.fusion)

    def sources_text(self, input_folder: Path) -> str:
        return ", ".join(str(p.relative_to(input_folder)) for p in self.sources)


def recording_hash(job: Job) -> str:
    """What the store recognises a recording by: the raw pair's bytes (store.identity.content_hash, as the
    service hashes an upload), or a fused table's bytes with its start time from index.csv."""
    from store.identity import content_hash

    if job.kind == "garmin":
        return content_hash(*job.sources)
    return content_hash(job.sources[0], (job.start_time or "").encode())


def find_subject_jobs(folder: Path) -> tuple[list[Job], list[dict]]:
    """A folder per subject (`<folder>/<subject>/`, each laid out as find_jobs reads it): every recording with
    its subject, and a skip record for what lies outside a subject's folder or under a folder that is not a
    subject id."""
    jobs, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not path.is_dir():
            skipped.append({"source": path.name, "reason": "not in a subject's folder (expected <subject>/...)"})
            continue
        try:
            subject = check_subject(path.name)
        except SubjectIdError as error:
            skipped.append({"source": path.name, "reason": str(error)})
            continue
        found, passed_over = find_jobs(path)
        jobs += [replace(j, subject=subject) for j in found]
        skipped += [{**item, "source": f"{path.name}/{item['source']}"} for item in passed_over]
    return jobs, skipped


def find_jobs(folder: Path) -> tuple[list[Job], list[dict]]:
    """Every recording in `folder` and in its fused session folders (`<session>/index.csv`, as stages.fuse
    writes them), and a skip record for everything else: nothing is passed over silently."""
    pairs, unpaired = find_garmin_pairs(folder)
    jobs = [Job(acc.name.removesuffix("-accelerometer_data.xlsx"), [acc, gyr], "garmin") for acc, gyr in pairs]
    skipped = [{"source": item["file"], "reason": item["reason"]} for item in unpaired]
    claimed = {p for job in jobs for p in job.sources} | {folder / item["file"] for item in unpaired}
    names = {job.name: job for job in jobs}
    sessions = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "index.csv").is_file())
    for fused_folder in [folder, *sessions]:
        start_times, fusion = fused_index(fused_folder)
        claimed |= {fused_folder / name for name in FUSED_FOLDER_FILES}
        for path in sorted(fused_folder.glob("*.parquet")):
            claimed.add(path)
            first = names.get(path.stem)
            if first is not None:  # one output folder per recording: the first source found wins
                skipped.append({"source": str(path.relative_to(folder)), "reason": f"recording {path.stem} is "
                                f"scored from {first.sources[0].relative_to(folder)}"})
            else:
                names[path.stem] = Job(path.stem, [path], "fused", start_times.get(path.stem), fusion.get(path.stem))
                jobs.append(names[path.stem])
    for path in sorted(p for f in [folder, *sessions] for p in f.iterdir()):
        if not path.name.startswith(".") and path not in claimed and path not in sessions:
            skipped.append({"source": str(path.relative_to(folder)),
                            "reason": "not a recording (expected <session>-accelerometer_data.xlsx + "
                                      "<session>-gyroscope_data.xlsx pairs, fused .parquet tables, or the "
                                      "<session>/ folders of stages.fuse)"})
    return jobs, skipped
