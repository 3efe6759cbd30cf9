"""A training run's parts, built once before its first step: data, placement, state layout,
optimizer, schedules, batch controller, eval step and checkpoints.

`build` reads top to bottom and checks bad input (config, data, workdir) before any compute; it
writes nothing in the workdir but its lock. What it opens, `resources` closes on every way out.
"""

import contextlib
import dataclasses
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from cbs import compiled_steps
from cbs import data as data_lib
from cbs import models
from cbs import train_state
from cbs.batching import controller as controller_lib
from cbs.batching import layout as layout_lib
from cbs.batching import memory_fit as fit
from cbs.checkpoint import checkpoints as checkpoint
from cbs.checkpoint import workdir_lock
from cbs.config import validation
from cbs.data import identity as data_identity
from cbs.data import stream as data_stream
from cbs.optim import lr_schedules
from cbs.parallel import placement as placement_lib
from cbs.parallel import sharding


@dataclasses.dataclass(frozen=True)
class RunSetup:
  """Everything a run's loop reads; built by `build`, never changed after."""

  config: ml_collections.ConfigDict
  workdir: epath.Path
  data: data_stream.Data
  data_identity: data_identity.Identity
  placement: placement_lib.Placement
  tx: optax.GradientTransformation
  state_layout: train_state.StateLayout
  lr_at: Callable[[int], float]  # tokens seen -> base learning rate
  param_counts: dict[str, int]
  controller: controller_lib.Controller
  eval_step: Callable  # (params, batch) -> loss sums
  checkpoints: checkpoint.Checkpoints

  @property
  def is_main_host(self) -> bool:
    return jax.process_index() == 0


def build(
  config: ml_collections.ConfigDict, workdir: str, resources: contextlib.ExitStack
) -> RunSetup:
  """The run of `config` in `workdir`, its workdir locked; bad input fails here, as ConfigError."""
  # ---- Data and workdir --------------------------------------------------------------------------
  data = _open_data(config)
  resources.callback(data.train.close)
  workdir = epath.Path(workdir)
  validation.check_workdir(config, workdir)
  validation.check_init_from(config, workdir)
  identity = data_identity.of(config)
  workdir.mkdir(parents=True, exist_ok=True)
  lock_workdir(workdir, resources)  # before anything in the workdir is written

  # ---- Mesh, state layout, schedules -------------------------------------------------------------
  steps = compiled_steps.step_setup(config, data.vocab_size, sharding.make_mesh(config.mesh))
  lr_at = lr_schedules.make(config.schedule, config.optimizer.lr, config.train_tokens)
  counts = models.param_counts(config.model, data.vocab_size)
  logging.info(
    "mesh %s, parameters %s (non-embedding %s)",
    dict(steps.placement.mesh.shape),
    f"{counts['total']:,}",
    f"{counts['non_embedding']:,}",
  )

  # ---- Compiled steps ----------------------------------------------------------------------------
  controller = _controller(config, steps)
  resources.callback(controller.close)
  eval_step = compiled_steps.eval_step(steps)

  # ---- Checkpoints -------------------------------------------------------------------------------
  checkpoints = checkpoint.Checkpoints(workdir, config.checkpoint.keep)
  resources.callback(checkpoints.close)
  return RunSetup(
    config=config,
    workdir=workdir,
    data=data,
    data_identity=identity,
    placement=steps.placement,
    tx=steps.tx,
    state_layout=steps.state_layout,
    lr_at=lr_at,
    param_counts=counts,
    controller=controller,
    eval_step=eval_step,
    checkpoints=checkpoints,
  )


def _open_data(config: ml_collections.ConfigDict) -> data_stream.Data:
  try:
    return data_lib.make(config, jax.process_index(), jax.process_count())
  except data_stream.DataError:  # damaged data, named by the error: reported as such
    raise
  except ValueError as e:  # missing files, splits, fields, vocabularies: the user's to fix
    raise validation.ConfigError(str(e)) from None


def _controller(
  config: ml_collections.ConfigDict, steps: compiled_steps.StepSetup
) -> controller_lib.Controller:
  """The batch controller over the run's compiled steps, its microbatch chosen if `auto`."""
  data_parallel = steps.placement.data_parallel
  compile_step = compiled_steps.step_compiler(config, steps)
  microbatch = None  # batch.microbatch as configured
  if config.batch.microbatch == layout_lib.AUTO:
    try:
      microbatch = fit.auto_microbatch(config.batch, data_parallel, compile_step)
    except ValueError as e:  # nothing fits: the user's to fix
      raise validation.ConfigError(str(e)) from None
  return controller_lib.Controller(
    config.batch, data_parallel, compile_step, steps.placement.device_groups is not None, microbatch
  )


def lock_workdir(workdir: epath.Path, resources: contextlib.ExitStack) -> None:
  """The primary host locks the workdir for this run; every host stops if it is refused."""
  refusal = None
  if jax.process_index() == 0:
    try:
      resources.enter_context(workdir_lock.Lock(workdir).acquire())
    except workdir_lock.WorkdirBusy as e:
      refusal = e
  if jax.process_count() > 1:
    refused = int(np.max(multihost_utils.process_allgather(np.int32(refusal is not None))))
    if refused and refusal is None:
      holder = workdir_lock.live_holder(workdir)
      refusal = workdir_lock.WorkdirBusy(
        f"workdir {workdir} is in use by "
        f"{holder.describe() if holder else 'another run'}; wait for it to end or stop it"
      )
  if refusal is not None:
    raise refusal
