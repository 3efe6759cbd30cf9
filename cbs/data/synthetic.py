"""The embedded default language: a seeded probabilistic finite automaton with a known loss floor.

A hidden state `s` emits token `t ~ p_s` (a Zipf-skewed distribution over a state-specific token
order) and moves to `delta(s, t)`. Because the next state is a deterministic function of the current
state and the emitted token, the entropy rate is exactly `sum_s pi_s H(p_s)` (pi: stationary
distribution of the induced state chain), and the Bayes-optimal loss of any finite sample is computed
exactly by filtering the belief over states. Sequences start from `pi`, so every position is in
distribution. Example `i` of a stream is a pure function of `(seed, i)`: counter-based hashing, no
generator state, so a stream position is one integer and any batch split reads the same examples.

This module owns the mathematics of the language; it knows nothing of batches, hosts or devices.
"""

import dataclasses

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclasses.dataclass(frozen=True)
class Automaton:
  """A probabilistic deterministic finite automaton over `vocab_size` tokens."""

  next_state_SxV: np.ndarray  # int: state after emitting token v in state s
  probs_SxV: np.ndarray  # float64: next-token distribution of each state
  stationary_S: np.ndarray  # float64: stationary distribution of the state chain

  @property
  def vocab_size(self) -> int:
    return self.probs_SxV.shape[1]

  @property
  def num_states(self) -> int:
    return self.probs_SxV.shape[0]


def make_automaton(num_states: int, vocab_size: int, zipf_exponent: float, seed: int) -> Automaton:
  """Draws the automaton: each state ranks the tokens in its own random order, Zipf-weighted."""
  rng = np.random.default_rng(seed)
  weights_V = 1.0 / np.arange(1, vocab_size + 1, dtype=np.float64) ** zipf_exponent
  weights_V /= weights_V.sum()
  order_SxV = np.argsort(rng.random((num_states, vocab_size)), axis=1)
  probs_SxV = np.empty((num_states, vocab_size))
  np.put_along_axis(probs_SxV, order_SxV, weights_V[None, :], axis=1)
  next_state_SxV = rng.integers(0, num_states, size=(num_states, vocab_size))
  return Automaton(next_state_SxV, probs_SxV, _stationary(next_state_SxV, probs_SxV))


def _stationary(next_state_SxV: np.ndarray, probs_SxV: np.ndarray) -> np.ndarray:
  """Stationary distribution of the state chain by power iteration (Cesaro-averaged for periodicity)."""
  num_states = probs_SxV.shape[0]
  transition_SxS = np.zeros((num_states, num_states))
  np.add.at(
    transition_SxS,
    (np.repeat(np.arange(num_states), probs_SxV.shape[1]), next_state_SxV.ravel()),
    probs_SxV.ravel(),
  )
  pi_S = np.full(num_states, 1.0 / num_states)
  for _ in range(10_000):
    new_S = 0.5 * pi_S + 0.5 * pi_S @ transition_SxS  # lazy chain: same fixed point, aperiodic
    if np.abs(new_S - pi_S).sum() < 1e-13:
      break
    pi_S = new_S
  return new_S / new_S.sum()


def entropy_rate(automaton: Automaton) -> float:
  """Best achievable loss per token in nats with unlimited context: sum_s pi_s H(p_s)."""
  p = automaton.probs_SxV
  entropy_S = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
  return float(automaton.stationary_S @ entropy_S)


def _uniform(seed: int, stream: int, example_N: np.ndarray, position: int) -> np.ndarray:
  """Uniform [0, 1) numbers that depend only on (seed, stream, example, position) (splitmix64)."""
  with np.errstate(over="ignore"):
    z = (
      np.uint64(seed) * _GOLDEN
      + np.uint64(stream) * np.uint64(0xBF58476D1CE4E5B9)
      + example_N.astype(np.uint64) * np.uint64(0x94D049BB133111EB)
      + np.uint64(position + 1) * _GOLDEN
    )
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sample(
  automaton: Automaton, seed: int, stream: int, example_N: np.ndarray, length: int
) -> np.ndarray:
  """Tokens [N, length] of the given examples; example i is the same whatever else is sampled."""
  example_N = np.asarray(example_N, dtype=np.int64)
  state_cdf = np.cumsum(automaton.stationary_S)
  token_cdf_SxV = np.cumsum(automaton.probs_SxV, axis=1)
  u = _uniform(seed, stream, example_N, -1)
  state_N = np.minimum(
    np.searchsorted(state_cdf, u * state_cdf[-1], side="right"), automaton.num_states - 1
  )
  tokens_NxL = np.empty((len(example_N), length), dtype=np.int32)
  for t in range(length):
    u = _uniform(seed, stream, example_N, t)[:, None]
    cdf_NxV = token_cdf_SxV[state_N]
    token_N = np.minimum((cdf_NxV <= u * cdf_NxV[:, -1:]).sum(axis=1), automaton.vocab_size - 1)
    tokens_NxL[:, t] = token_N
    state_N = automaton.next_state_SxV[state_N, token_N]
  return tokens_NxL


def bayes_loss(automaton: Automaton, tokens_NxL: np.ndarray) -> float:
  """Mean loss (nats) of the Bayes-optimal predictor on tokens[:, 1:] given each prefix.

  The belief over hidden states starts at pi and is updated exactly after each token; this is the
  floor for a model with the same context on exactly these sequences, above the entropy rate
  because early positions cannot know the state.
  """
  num, length = tokens_NxL.shape
  belief_NxS = np.tile(automaton.stationary_S, (num, 1))
  rows_N = np.arange(num)
  total = 0.0
  for t in range(length):
    token_N = tokens_NxL[:, t]
    joint_NxS = belief_NxS * automaton.probs_SxV[:, token_N].T  # P(state, token | prefix)
    p_token_N = joint_NxS.sum(axis=1)
    if t > 0:
      total -= np.log(p_token_N).sum()
    flat = (rows_N[:, None] * automaton.num_states + automaton.next_state_SxV[:, token_N].T).ravel()
    new_NxS = np.bincount(flat, weights=joint_NxS.ravel(), minlength=num * automaton.num_states)
    belief_NxS = new_NxS.reshape(num, automaton.num_states) / p_token_N[:, None]
  return total / (num * (length - 1))
