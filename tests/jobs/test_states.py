"""Job and recipe states are StrEnums whose values are the strings the catalog has always stored."""

from __future__ import annotations

from pertstore.catalog import JobState, RecipeState


def test_state_values_are_the_stored_strings():
    assert [s.value for s in JobState] == [
        "queued",
        "running",
        "cancelling",
        "cancelled",
        "done",
        "failed",
        "interrupted",
    ]
    assert [s.value for s in RecipeState] == [
        "pending",
        "exists",
        "waiting",
        "running",
        "staged",
        "done",
        "failed",
        "cancelled",
    ]
    assert JobState.DONE == "done" and f"{RecipeState.EXISTS}" == "exists"


def test_a_job_stores_and_reads_back_plain_state_strings(store):
    recipe = "recipes:\n  - {producer: checksum, source: ck, params: {limit: 20, dim: 2}}\n"
    store.produce("checksum", source="ck", params={"limit": 20, "dim": 2})
    state = store.jobs.submit(recipe)  # the set exists: no cluster needed
    assert state.state is JobState.DONE and state.recipes[0].state is RecipeState.EXISTS
    stored = store.catalog.query(
        "SELECT j.state AS job, r.state AS recipe FROM jobs j JOIN job_recipes r USING (job_id)"
    )
    assert stored.to_dict(orient="records") == [{"job": "done", "recipe": "exists"}]
    assert JobState(store.jobs.status(state.job_id)["state"]) is JobState.DONE
