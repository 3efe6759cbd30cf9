"""The embedded language against independent computations of its entropy and sampling law."""

import numpy as np
import pytest

from cbs.data import synthetic


@pytest.fixture(scope="module")
def automaton():
  return synthetic.make_automaton(num_states=6, vocab_size=5, zipf_exponent=1.3, seed=7)


def test_stationary_distribution_is_fixed_point(automaton):
  transition = np.zeros((6, 6))
  for s in range(6):
    for v in range(5):
      transition[s, automaton.next_state_SxV[s, v]] += automaton.probs_SxV[s, v]
  np.testing.assert_allclose(
    automaton.stationary_S @ transition, automaton.stationary_S, atol=1e-12
  )
  assert automaton.stationary_S.sum() == pytest.approx(1.0)


def test_entropy_rate_matches_long_sample_log_likelihood(automaton):
  # Per-token log-likelihood of long samples, skipping the first 50 positions where the hidden
  # state is still uncertain, converges to the entropy rate (Shannon-McMillan-Breiman).
  tokens = synthetic.sample(automaton, seed=3, stream=0, example_N=np.arange(200), length=400)
  total, count = 0.0, 0
  for row in tokens:
    belief = automaton.stationary_S.copy()
    for t, v in enumerate(row):
      p = belief * automaton.probs_SxV[:, v]
      if t >= 50:
        total -= np.log(p.sum())
        count += 1
      nxt = np.zeros(6)
      np.add.at(nxt, automaton.next_state_SxV[:, v], p)
      belief = nxt / nxt.sum()
  assert total / count == pytest.approx(synthetic.entropy_rate(automaton), abs=0.03)


def test_token_frequencies_follow_the_stationary_mixture(automaton):
  tokens = synthetic.sample(automaton, seed=1, stream=0, example_N=np.arange(4000), length=3)
  expected = automaton.stationary_S @ automaton.probs_SxV
  observed = np.bincount(tokens[:, 0], minlength=5) / 4000
  np.testing.assert_allclose(observed, expected, atol=0.03)


def test_example_depends_only_on_its_index(automaton):
  whole = synthetic.sample(automaton, 11, 0, np.arange(10), 16)
  part = synthetic.sample(automaton, 11, 0, np.array([7, 3]), 16)
  np.testing.assert_array_equal(part, whole[[7, 3]])
  other_stream = synthetic.sample(automaton, 11, 1, np.arange(10), 16)
  assert not np.array_equal(other_stream, whole)


def test_bayes_loss_matches_brute_force_marginalisation(automaton):
  tokens = synthetic.sample(automaton, 5, 0, np.arange(3), 5)

  # Brute force: P(prefix) by summing over every start state; loss = -log P(x_t | x_<t).
  def prob(prefix):
    total = 0.0
    for s0 in range(6):
      p, s = automaton.stationary_S[s0], s0
      for v in prefix:
        p *= automaton.probs_SxV[s, v]
        s = automaton.next_state_SxV[s, v]
      total += p
    return total

  losses = [-np.log(prob(row[: t + 1]) / prob(row[:t])) for row in tokens for t in range(1, 5)]
  assert synthetic.bayes_loss(automaton, tokens) == pytest.approx(np.mean(losses), rel=1e-10)
  assert synthetic.bayes_loss(automaton, tokens) > 0


def test_uniform_automaton_has_log_vocab_entropy():
  flat = synthetic.make_automaton(4, 8, zipf_exponent=0.0, seed=0)
  assert synthetic.entropy_rate(flat) == pytest.approx(np.log(8))


def test_stream_hosts_and_batch_changes_read_each_example_once(automaton):
  from cbs.data import synthetic_stream

  whole = synthetic.sample(automaton, 5, 0, np.arange(40), 9)
  hosts = [synthetic_stream.SyntheticStream(automaton, 8, 5, h, 2) for h in range(2)]
  rows = []
  for batch_size in (4, 8, 2, 6, 20):
    parts = [host.next_batch(batch_size)["inputs"] for host in hosts]
    rows += list(np.concatenate(parts))  # the global batch: host 0's rows, then host 1's
  np.testing.assert_array_equal(np.stack(rows), whole[:, :-1])
  restored = synthetic_stream.SyntheticStream(automaton, 8, 5, 0, 1)
  restored.set_state({"position": 14})
  np.testing.assert_array_equal(restored.next_batch(3)["targets"], whole[14:17, 1:])
