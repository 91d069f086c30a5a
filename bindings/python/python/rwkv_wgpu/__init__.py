"""RWKV language models on any GPU through WebGPU (rwkv-wgpu).

`Model` mirrors the official package's `rwkv.model.RWKV`: a script written for it changes its
import (`from rwkv_wgpu import RWKV`) and runs on Vulkan, Metal or DX12 instead of CUDA or the CPU.
Logits and states are numpy arrays and `State` objects instead of torch tensors.
"""

from ._native import Model, RwkvError, State

#: The official package's name for the model class.
RWKV = Model

__all__ = ["Model", "RWKV", "RwkvError", "State"]
