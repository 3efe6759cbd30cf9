"""Mesh construction, logical rules, and a state created directly with the shardings they imply."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from cbs import train_state
from cbs.optim import optimizers as optim
from cbs.parallel import sharding
from configs import tiny


def mesh_cfg(data, model, fsdp=False):
  c = tiny.get_config().mesh
  c.data, c.model, c.fsdp = data, model, fsdp
  return c


@pytest.mark.parametrize(
  "data,model,expected", [(-1, 1, (8, 1)), (-1, 2, (4, 2)), (2, -1, (2, 4)), (1, 1, (1, 1))]
)
def test_mesh_shape_resolves_minus_one(data, model, expected):
  assert sharding.mesh_shape(mesh_cfg(data, model), 8) == expected


@pytest.mark.parametrize(
  "data,model,message",
  [
    (16, 1, "needs more than the 8 available devices"),
    (-1, -1, "cannot both be -1"),
    (0, 1, "mesh.data=0 must be a positive"),
  ],
)
def test_bad_meshes_are_named(data, model, message):
  with pytest.raises(ValueError, match=message):
    sharding.mesh_shape(mesh_cfg(data, model), 8)


def test_fsdp_is_the_embed_rule():
  assert dict(sharding.logical_rules(mesh_cfg(8, 1, fsdp=True)))["embed"] == "data"
  assert dict(sharding.logical_rules(mesh_cfg(8, 1, fsdp=False)))["embed"] is None


@pytest.mark.parametrize("fsdp", [False, True])
def test_state_is_created_with_the_rules_shardings(fsdp):
  config = tiny.get_config()
  config.mesh = mesh_cfg(4, 2, fsdp)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config.mesh)
  tx = optim.make(config.optimizer)
  state_layout = train_state.state_layout(config, 32, tx, mesh, rules)
  state = train_state.create(config, 32, state_layout, mesh, rules)
  embed_axis = "data" if fsdp else None
  wi = state["params"]["blocks"][0]["mlp"]["wi"]
  assert wi.sharding.spec == P(embed_axis, "model")
  assert wi.addressable_shards[0].data.shape == (64 // (4 if fsdp else 1), 256 // 2)
  assert state["params"]["embed"].sharding.spec == P("model", embed_axis)
  adam_state = state["opt"][1][0]  # chain(clip, adamw) -> adamw = chain(adam, decay, lr)
  assert adam_state.mu["blocks"][0]["mlp"]["wi"].sharding.spec == wi.sharding.spec
  for name in ("0.9", "0.99"):
    assert state["ewa"]["mean"][name]["blocks"][0]["mlp"]["wi"].sharding.spec == wi.sharding.spec
  assert jax.tree.structure(state_layout.abstract) == jax.tree.structure(state)
