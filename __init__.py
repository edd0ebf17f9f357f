"""hnetbench: benchmark and ablation suite for tokenizer-free hierarchical language models."""

__version__ = "0.1.0"
