"""Live progress of a producer job, fed by the job driver's progress callback (CLI and demo)."""

from __future__ import annotations

from rich.progress import Progress


class JobBar:
    """A rich progress bar for one job: pass it as ``Jobs.submit(..., progress=JobBar(bar))``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def __call__(self, state) -> None:
        if self.task is None:
            self.task = self.progress.add_task(f"job {state.job_id}", total=max(state.items_total, 1))
        running = [r.source for r in state.recipes if r.state == "running"]
        self.progress.update(
            self.task,
            total=max(state.items_total, 1),
            completed=state.items_done,
            description=f"job {state.job_id} " + (", ".join(running[:3]) or state.state),
        )
