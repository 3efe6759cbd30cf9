"""Joining a multi-process run (several hosts, or several processes on one machine).

Kept apart from the command line so that tests and launchers can call it without its flags.
"""

import jax
import ml_collections

from cbs.config import validation


def start(mesh_cfg: ml_collections.ConfigDict) -> None:
  """Joins a multi-process run: auto-detected (`mesh.distributed`) or given by hand.

  By hand (`mesh.coordinator`, `mesh.num_processes`, `mesh.process_id`) works on machines without
  a cluster manager; on CPU the processes exchange data through gloo collectives.
  """
  manual = (mesh_cfg.coordinator, mesh_cfg.num_processes > 0, mesh_cfg.process_id >= 0)
  if any(manual) and not all(manual):
    raise validation.ConfigError(
      f"mesh.coordinator={mesh_cfg.coordinator!r}, mesh.num_processes={mesh_cfg.num_processes}, "
      f"mesh.process_id={mesh_cfg.process_id}: set all three (HOST:PORT, N > 0, 0 <= id < N) or "
      "none"
    )
  if all(manual):
    host, _, port = mesh_cfg.coordinator.rpartition(":")
    validation.require(
      bool(host) and port.isdigit(), f"mesh.coordinator={mesh_cfg.coordinator!r} must be HOST:PORT"
    )
    validation.require(
      mesh_cfg.process_id < mesh_cfg.num_processes,
      f"mesh.process_id={mesh_cfg.process_id} must be below mesh.num_processes="
      f"{mesh_cfg.num_processes}",
    )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; GPUs/TPUs ignore it
    jax.distributed.initialize(
      coordinator_address=mesh_cfg.coordinator,
      num_processes=mesh_cfg.num_processes,
      process_id=mesh_cfg.process_id,
    )
  elif mesh_cfg.distributed:
    jax.distributed.initialize()  # finds the coordinator on TPU pods, Slurm and GKE by itself
