"""Planning for TPU slices from any host: the compiled program's collectives, the interconnect they cross, and libtpu's environment."""
