"""The progress record's JSON form: what checkpoints store and older ones hold."""

from cbs.run.progress import Progress

SAVED = {
  "step": 7,
  "tokens": 7 * 512,
  "seed": 3,
  "data": {"epoch": 0, "position": 56},
  "data_identity": {"source": "synthetic", "seed": 3},
  "batch": {"size": 16, "smoothed": None, "history": []},
  "skipped_steps": 1,
}


def test_a_saved_record_reads_back_unchanged():
  assert Progress.from_dict(SAVED).as_dict() == SAVED
  assert list(Progress.from_dict(SAVED).as_dict()) == list(SAVED)  # the same JSON, key order too


def test_an_older_record_keeps_only_what_it_had():
  old = {"step": 4, "tokens": 2048, "seed": 0, "data": {"position": 32}}
  progress = Progress.from_dict(old)
  assert progress.skipped_steps is None and progress.batch is None
  assert progress.as_dict() == old


def test_a_fresh_run_and_a_branch():
  assert Progress.start(5).as_dict() == {"step": 0, "tokens": 0, "seed": 5}
  branch = Progress.from_dict(SAVED).branched().as_dict()
  assert branch == {k: SAVED[k] for k in ("step", "tokens", "seed", "data", "skipped_steps")}
