"""Models: building blocks, the H-Net, the LM wrapper and cached generation."""

from hnetbench.models.lm import CausalLM, LMOutput, build_model, count_parameters, register_arch

__all__ = ["CausalLM", "LMOutput", "build_model", "count_parameters", "register_arch"]
