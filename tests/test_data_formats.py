"""The main job trains on prompt sets held the way TRL / OpenRLHF / veRL users hold them: a
Parquet file and a saved `datasets` folder, with no conversion step (real engines, tiny model)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]


@pytest.mark.parametrize("form", ["parquet", "datasets"])
def test_the_main_job_trains_on_a_parquet_file_and_a_datasets_folder(form, ray_cluster, tiny_model_dir, tmp_path):
    """Chat prompts in a `messages` column (TRL's conversational form) with integer keys:
    the run reads them as they are and trains. Would catch a loader that only reads JSONL, or a
    chat column that reaches the actors as something other than its encoded chat."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.config import load_config
    from cluster.data.prompts import SHIPPED_TRAIN, read_prompt_rows
    from cluster.run import run

    rows, _ = read_prompt_rows(SHIPPED_TRAIN)
    records = [{"key": 500 + i, "messages": [{"role": "user", "content": r.text}]} for i, r in enumerate(rows[:24])]
    if form == "parquet":
        source = tmp_path / "prompts.parquet"
        pq.write_table(pa.Table.from_pylist(records), source)
    else:
        source = tmp_path / "prompts-ds"
        datasets.Dataset.from_list(records).save_to_disk(str(source))
    run_dir = tmp_path / "run"
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", f"data.prompts={source}", "data.prompt_column=messages", "rollout.k=2",
        "rollout.max_tokens=6", "learner.max_steps=2", "learner.pairs_per_step=2", "checkpoint.every=0",
        f"checkpoint.dir={run_dir}", f"pipeline.spill_dir={run_dir / 'pairs'}", "metrics.trackers=[]",
        "metrics.progress=false", "metrics.probe_every=0"])
    assert run(cfg).step == 2
    trained = pa.concat_tables([pq.read_table(f) for f in sorted((run_dir / "pairs").glob("*.parquet"))])
    ids = set(trained["prompt_id"].to_pylist())
    assert ids and ids <= {str(r["key"]) for r in records}  # the rows' own integer keys, as ids
