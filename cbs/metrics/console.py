"""Counts (tokens, parameters, tokens/s) in the short form the console and the analysis print."""


def short(n: float) -> str:
  """1234567 -> '1.23M': three significant digits, k / M / B (billions, as in "1.5B parameters")."""
  for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.3g}{unit}"
  return f"{n:.3g}"
