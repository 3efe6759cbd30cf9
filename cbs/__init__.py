"""cbs: pretraining language models to study and exploit the critical batch size."""

from cbs.tpu import libtpu_env

libtpu_env.quiet_without_tpu()  # before any JAX backend starts
