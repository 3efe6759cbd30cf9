"""Shapes of the five models of Zhang et al. 2024 (arXiv 2410.21676), non-embedding N ~ 12 L d^2."""

PAPER_SIZES = {
  "85m": dict(num_layers=12, d_model=768, num_heads=12, d_head=64, mlp_dim=3072),
  "151m": dict(num_layers=12, d_model=1024, num_heads=16, d_head=64, mlp_dim=4096),
  "302m": dict(num_layers=24, d_model=1024, num_heads=16, d_head=64, mlp_dim=4096),
  "604m": dict(num_layers=12, d_model=2048, num_heads=16, d_head=128, mlp_dim=8192),
  "1.2b": dict(num_layers=24, d_model=2048, num_heads=32, d_head=64, mlp_dim=8192),
}
