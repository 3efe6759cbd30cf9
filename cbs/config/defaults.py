"""Every knob of a `cbs` run, with its default and what it means.

Config files start from `get_config()` here (`configs/base.py` names it for them) and change what
they need; any key can be overridden on the command line (`--config.batch.size=64`). Durations are
in tokens, never steps, because the batch size may change during a run. Part of `cbs`, which
checks every config against these keys, so that the package never imports the config files.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # seeds parameter init and the synthetic data; same seed, same run
  c.train_tokens = 50_000_000  # run length in tokens (the run stops at the first step reaching it)
  # The data budget D of a CBS measurement: the target loss is what the reference-batch run reaches
  # after D tokens (analysis groups runs by model and D); 0 = train_tokens. Runs at large batches
  # may set train_tokens above D (with train.stop_loss) so that they can reach the target.
  c.data_budget_tokens = 0
  c.compile_cache_dir = "~/.cache/cbs/xla"  # JAX persistent compilation cache; "" = off

  c.model = ml_collections.ConfigDict()
  c.model.name = "paper"  # paper (GeLU, LayerNorm, QK-norm, untied) | llama (RMSNorm, SwiGLU, GQA)
  c.model.num_layers = 12  # transformer blocks
  c.model.d_model = 768  # residual stream width
  c.model.num_heads = 12  # query heads
  c.model.num_kv_heads = -1  # key/value heads for grouped-query attention; -1 = num_heads
  c.model.d_head = -1  # width of one head; -1 = d_model // num_heads
  c.model.mlp_dim = (
    -1
  )  # MLP hidden width; -1 = 4 * d_model (paper) or 8/3 * d_model rounded (llama)
  c.model.vocab_size = -1  # embedding rows; -1 = the data's vocabulary size
  c.model.tie_embeddings = False  # share input and output embeddings (llama only; paper is untied)
  c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters always float32)
  c.model.norm_eps = 1e-5  # epsilon of LayerNorm / RMSNorm
  c.model.rope_theta = 10_000.0  # RoPE base frequency
  # The paper model follows the OLMo code of Zhang et al. 2024 by default:
  c.model.qk_norm = (
    "auto"  # full (whole q / k vectors) | head (per head) | none; auto: paper full, llama none
  )
  c.model.gelu = "exact"  # paper MLP activation: exact (erf, the paper's) | tanh (approximation)
  c.model.out_init = (
    "layer"  # residual projections' init x 1/sqrt(2 (l+1)) at block l | depth: 1/sqrt(2 L)
  )
  # sp (standard) | mup (maximal update parameterization, Yang et al. 2022: embedding init and Adam
  # lr of vectors fixed, hidden-matrix Adam lr x base_width / d_model, logits x base_width / d_model,
  # attention scores / d_head); equal to sp at d_model = base_width.
  c.model.param = "sp"
  c.model.base_width = 256  # muP: the width whose hyper-parameters transfer
  c.model.attention = (
    "auto"  # auto | einsum | xla | cudnn (auto: cudnn on GPUs in bf16, else einsum)
  )
  c.model.scan_layers = False  # one scanned block: compile time independent of depth
  c.model.remat = (
    "none"  # recompute each block in the backward pass: none | full | dots (keep matmuls)
  )

  c.data = ml_collections.ConfigDict()
  c.data.source = (
    "synthetic"  # synthetic (embedded, no download) | text_files | prepared | tfds | seqio
  )
  c.data.seq_len = 512  # tokens per training sequence (the model's context)
  c.data.vocab = (
    "byte"  # byte | SentencePiece .model | Hugging Face tokenizer.json (local or gs://)
  )
  c.data.files = ""  # text_files: comma-separated globs of .txt (1 document each), .jsonl, .parquet
  c.data.prepared_dir = ""  # prepared: output of `python -m cbs.data.prepare` (local or gs://)
  c.data.eval_files = ""  # text_files: held-out files; "" = the last of data.files (not trained on)
  c.data.text_field = (
    "text"  # field / column holding the text in .jsonl, .parquet and TFDS examples
  )
  c.data.tfds_name = "c4/en:3.1.0"  # tfds (and the cbs_c4 seqio task): dataset name and version
  c.data.tfds_data_dir = (
    ""  # tfds: directory holding prepared datasets (local or gs://); "" = default
  )
  c.data.train_split = "train"  # prepared / tfds / seqio: split trained on
  c.data.eval_split = "validation"  # prepared / tfds / seqio: split of the fixed held-out set
  c.data.seqio_task = "cbs_c4"  # seqio: task or mixture; cbs_c4 = raw C4 text with data.vocab
  c.data.seqio_module = ""  # seqio: module to import that registers data.seqio_task
  c.data.prefetch = 1024  # examples per host read ahead by grain in background threads
  # text_files / tfds / seqio: examples per host mixed in each seeded block (1 = reading order)
  c.data.shuffle_buffer = 4096
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.num_states = 256  # hidden states of the random automaton generating the text
  c.data.synthetic.vocab_size = 256  # tokens the automaton emits
  c.data.synthetic.zipf_exponent = 1.0  # skew of each state's next-token distribution (0 = uniform)
  c.data.synthetic.seed = 1234  # seeds the automaton itself (the "language"), not the sample order

  c.batch = ml_collections.ConfigDict()
  c.batch.size = 256  # global batch in sequences (the initial one when the batch grows)
  c.batch.max_size = -1  # cap for growing schedules; -1 = batch.size
  # Sequences per device per accumulation step; -1 = batch.size / data-parallel; auto = the largest
  # whose compiled step fits the device memory with 10% to spare (TPU, GPU; -1 on CPU).
  c.batch.microbatch = ml_collections.FieldReference(-1, field_type=object)  # int or "auto"
  c.batch.round = (
    "multiple"  # sizes allowed: multiple (of microbatch x data-parallel) | pow2 (x 2^k)
  )
  c.batch.schedule = (
    "constant"  # constant | ramp | measured | norm | inner_product | augmented | gns
  )
  c.batch.ramp = ()  # ramp: stages ((tokens, size), ...): from `tokens` on, train at `size`
  c.batch.probe_file = ""  # measured: a launch.probe result (RUN/probes/probe.json) to ramp along
  c.batch.ramp_tokens = (
    0  # ramp: if > 0, grow linearly from batch.size to max_size over these tokens
  )
  c.batch.eta = 0.1  # norm test: passes if gradient variance / batch <= eta^2 |g|^2
  c.batch.theta = 0.1  # inner-product test tolerance (inner_product, augmented)
  c.batch.nu = 0.1  # orthogonality test tolerance (augmented)
  c.batch.gns_k = 1.0  # gns: grow towards k x the gradient noise scale B_simple
  c.batch.test_interval = 1  # adaptive schedules test every this many steps (until the cap)
  c.batch.test_groups = (
    -1
  )  # M, gradient groups the tests use; -1 = data-parallel x accumulation, >= 2
  c.batch.stats_ema = 0.0  # EMA decay of the test statistics before taking ratios; 0 = none
  c.batch.gns_every = 0  # also estimate the gradient noise scale every this many steps (logged as
  # grad_noise_scale) in runs that do not test, e.g. constant ones; only those steps pay. 0 = off
  c.batch.lr_scaling = "none"  # lr on growth, relative to batch.size: none | sqrt | linear
  c.batch.precompile = True  # compile the next likely batch layout in a background thread

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # devices on the data-parallel axis; -1 = all devices not used by `model`
  c.mesh.model = 1  # devices on the tensor-parallel axis; -1 = all devices not used by `data`
  c.mesh.fsdp = False  # shard parameters and optimizer state over `data` (ZeRO-3 / FSDP style)
  # Logical axis -> mesh axis. `embed` goes to `data` when fsdp is on, whatever is written here.
  c.mesh.rules = (
    ("batch", "data"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("vocab", "model"),
    ("head_dim", None),
    ("layers", None),  # the stacked axis of scanned blocks (model.scan_layers)
  )
  c.mesh.distributed = False  # call jax.distributed.initialize() (multi-host: TPU pods, Slurm)
  # Manual multi-process start (no cluster manager): all three set, or all left empty (auto-detect).
  c.mesh.coordinator = ""  # HOST:PORT of process 0's coordinator service
  c.mesh.num_processes = 0  # processes in the run
  c.mesh.process_id = -1  # this process's index, 0 .. num_processes - 1

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # adamw | adam | sgd | lion | adafactor | signum
  c.optimizer.lr = 3e-3  # peak learning rate
  c.optimizer.b1 = 0.9  # first-moment decay (momentum for sgd and signum)
  c.optimizer.b2 = 0.95  # second-moment decay (lion: its interpolation decay)
  c.optimizer.eps = 1e-8  # Adam epsilon
  c.optimizer.weight_decay = 0.0  # decoupled weight decay, multiplied by the learning rate
  # AdamW timescale tau = B / (lr wd D) as a fraction of the run (Bergsma et al. 2025); > 0 derives
  # the weight decay at every step from the batch size, peak lr and train_tokens (instead of
  # weight_decay), so a growing batch keeps the same averaging horizon. 0 = off.
  c.optimizer.wd_timescale = 0.0
  c.optimizer.clip = 1.0  # global gradient-norm clipping threshold; 0 = off
  c.optimizer.nesterov = False  # Nesterov momentum (sgd only)

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = (
    "constant"  # constant | linear_to_zero | cosine | wsd | rsqrt (all after warmup)
  )
  c.schedule.warmup_tokens = 0  # linear warmup length in tokens
  c.schedule.warmup_init = 0.1  # learning rate at token 0, as a fraction of the peak
  c.schedule.final_fraction = 0.1  # cosine floor, as a fraction of the peak
  c.schedule.decay_fraction = 0.2  # wsd: fraction of the run spent decaying to zero at the end
  c.schedule.rsqrt_tokens = -1  # rsqrt: timescale in tokens; -1 = warmup_tokens (or 1% of the run)

  c.ewa = ml_collections.ConfigDict()
  c.ewa.decays = (0.99, 0.999)  # per-step taus of exponential weight averages (bias-corrected)
  c.ewa.horizons_tokens = ()  # EWAs with tau = exp(-tokens_per_step / horizon): batch-invariant

  c.eval = ml_collections.ConfigDict()
  c.eval.every_tokens = (
    5_000_000  # evaluate raw and EWA weights this often (log-spaced: first eval)
  )
  # > 0: evaluate at log-spaced token counts instead, every_tokens x 2^(k / per_doubling), k >= 0
  c.eval.per_doubling = 0
  # > 0: also evaluate at dense_from_tokens x 2^(k / dense_per_doubling): dense where steps to target
  # are interpolated (CBS runs: near the data budget)
  c.eval.dense_from_tokens = 0
  c.eval.dense_per_doubling = 16
  c.eval.tokens = 1_000_000  # size of the fixed held-out set, in tokens
  c.eval.batch_size = 64  # sequences per eval step

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_tokens = 10_000_000  # save this often (and always at the end)
  c.checkpoint.keep = 3  # newest checkpoints kept on disk

  c.train = ml_collections.ConfigDict()
  c.train.on_nonfinite = (
    "stop"  # NaN/Inf loss or gradient: stop (error, keep last checkpoint) | skip
  )
  c.train.stop_loss = 0.0  # finish early once an eval loss (raw or any EWA) is <= this; 0 = off
  c.train.init_from = ""  # start from another run's checkpoint (its workdir); used by launch.probe
  c.train.init_step = -1  # the step of that checkpoint; -1 = its latest
  c.train.allow_config_change = False  # resume a workdir whose model/data config differs from this
  # resume on data that changed since the checkpoint (files, manifest, vocabulary, seed); the new
  # data is read from the start of an epoch. Without it such a resume is refused.
  c.train.allow_data_change = False
  c.train.restart_if_unrestorable = False  # start at step 0 if checkpoints exist but none restores

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 10  # train metrics are fetched from the device only this often

  c.profile = ml_collections.ConfigDict()
  c.profile.start_tokens = -1  # capture a jax.profiler trace from this token count on; -1 = off
  c.profile.steps = 5  # steps in the trace (WORKDIR/plugins/profile, TensorBoard's profile tab)
  return c
