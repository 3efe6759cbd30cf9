"""Where a run starts: its latest checkpoint, a branch of another run's, or step 0.

A resumed run continues exactly where it stopped, on the same data: the state, the data position
and the batch controller's decisions come back from the checkpoint. A checkpoint the config cannot
restore, or one written on other data, is refused with one line saying why and what to do.
"""

import contextlib
from typing import Any
from typing import NamedTuple

import ml_collections
from absl import logging
from etils import epath

from cbs import convert_checkpoint
from cbs import train_state
from cbs.checkpoint import checkpoints as checkpoint
from cbs.checkpoint import errors as checkpoint_errors
from cbs.config import validation
from cbs.data import identity as data_identity
from cbs.metrics import records
from cbs.run import setup as run_setup
from cbs.run.progress import Progress


class Start(NamedTuple):
  """The state and progress a run's first step starts from."""

  state: Any
  progress: Progress
  resumed_from: int | None  # the restored step; None for a fresh start or a branch


def start(run: run_setup.RunSetup) -> Start:
  """The run's starting point, the data and controller set to it; the metrics file is cut back to
  it (a fresh run writes a record at its start step: none in the file is its own)."""
  config = run.config
  restored = restore(run.checkpoints, config, run.state_layout.abstract)
  if restored is None and config.train.init_from:
    state, progress = branch_from(config, run.state_layout.abstract)
    run.data.train.set_state(progress.data)
  elif restored is None:
    where = run.placement
    state = train_state.create(
      config, run.data.vocab_size, run.state_layout, where.mesh, where.rules
    )
    progress = Progress.start(config.seed)
  else:
    state, saved = restored
    progress = Progress.from_dict(saved)
    if check_same_data(saved, run.data_identity, config, run.checkpoints.directory):
      run.data.train.set_state(progress.data)
    run.controller.set_state(progress.batch)
    logging.info("resumed from step %d (%s tokens)", progress.step, f"{progress.tokens:,}")
  if run.is_main_host:
    last_kept = progress.step - 1 if restored is None else progress.step
    records.drop_records_after(run.workdir, last_kept)
  return Start(state, progress, None if restored is None else progress.step)


def branch_from(config: ml_collections.ConfigDict, abstract_state) -> tuple[Any, Progress]:
  """State and progress of another run's checkpoint (`train.init_from`, `train.init_step`).

  The branch continues that run's weights, optimizer state, averages, token count and data
  position exactly; its own config decides the batch size and learning rate from there on.
  """
  parent = checkpoint.Checkpoints(config.train.init_from, keep=1_000_000, create=False)
  with contextlib.closing(parent):  # `validation.check_init_from` found the step
    step = config.train.init_step if config.train.init_step >= 0 else parent.latest_step()
    state, progress = parent.restore(step, abstract_state)
  logging.info(
    "branched from %s at step %d (%s tokens)",
    config.train.init_from,
    step,
    f"{progress['tokens']:,}",
  )
  return state, Progress.from_dict(progress).branched()


def restore(
  checkpoints: checkpoint.Checkpoints, config: ml_collections.ConfigDict, abstract_state
) -> tuple[Any, dict] | None:
  """The latest checkpoint's state and progress; None only for a run that never saved one.

  A checkpoint that does not fit the model is the config's problem: one line naming the step, the
  mismatch and the config keys that changed, with the conversion command for the unrolled <->
  scanned layout. `train.restart_if_unrestorable` makes "none restores" a deliberate fresh start.
  """
  try:
    return checkpoints.restore_latest(abstract_state)
  except checkpoint_errors.Incompatible as e:
    raise validation.ConfigError(_incompatible_message(e, checkpoints, config)) from None
  except checkpoint_errors.NoneRestorable as e:
    if not config.train.restart_if_unrestorable:
      raise
    logging.warning("%s: starting over from step 0 (train.restart_if_unrestorable=True)", e)
    return None


def _incompatible_message(
  error: checkpoint_errors.Incompatible,
  checkpoints: checkpoint.Checkpoints,
  config: ml_collections.ConfigDict,
) -> str:
  try:
    changed = validation.model_data_changes(checkpoints.saved_config(error.step), config)
  except Exception:  # the saved config only explains the mismatch; without it the mismatch stands
    changed = []
  message = str(error) + (f" ({'; '.join(changed[:3])})" if changed else "")
  stored = convert_checkpoint.layout_of(error.stored_keys)
  wanted = "scanned" if config.model.scan_layers else "unrolled"
  if stored and stored != wanted:
    scan = config.model.scan_layers
    message += (
      f"; convert its {stored} blocks to {wanted} ones with `python -m "
      f"cbs.convert_checkpoint --workdir={checkpoints.directory.parent} "
      f"--scan_layers={scan}` (or resume with model.scan_layers={not scan})"
    )
  return message + "; nothing was changed"


def check_same_data(
  progress: dict,
  identity: data_identity.Identity,
  config: ml_collections.ConfigDict,
  directory: epath.Path,
) -> bool:
  """Whether a restored run continues on its own data (True), or deliberately on new data.

  A checkpoint written on other data (files added, removed or resized, another manifest,
  vocabulary or seed) is refused unless `train.allow_data_change`; older checkpoints that
  recorded no identity are taken as they are.
  """
  saved = progress.get("data_identity")
  changed = data_identity.changes(saved, identity) if saved is not None else []
  if not changed:
    return True
  where = f"checkpoint {progress['step']} in {directory}"
  if not config.train.allow_data_change:
    raise validation.ConfigError(
      f"{where} was written on other data ({'; '.join(changed)}); resume on the same data, or "
      "set train.allow_data_change=True to go on with this data from the start of an epoch; "
      "nothing was changed"
    )
  logging.warning(
    "%s was written on other data (%s); train.allow_data_change=True: reading the "
    "new data from the start of an epoch",
    where,
    "; ".join(changed),
  )
  return False
