"""What a run reports: the metric writers, the records file, TensorBoard, performance and FLOP counts, console formatting."""
