"""Layers shared by the models: a 2-D convolution whose derivatives stay fast under ``lax.scan``.

``Conv`` is the convolution every model uses. It has the parameters of ``flax.linen.Conv``
(``kernel`` (kh, kw, C_in, C_out) with ``lecun_normal`` init, ``bias`` (C_out,) with zeros),
so parameter trees, counts and initial values are identical to Flax's.

Why it exists: inside a ``lax.scan`` (one compiled epoch, docs/methods.md §4 item 15) XLA:CPU does not
rewrite the convolutions that autodiff produces for the backward pass (the "transposed"
input- and filter-gradient convolutions, with non-canonical dimension numbers) into its
fast canonical form. On a 2-core CPU with jax 0.10.2 a LeNet epoch under scan was measured
13x slower than a Python loop of jitted steps. We therefore write the derivatives ourselves
as canonical (NHWC, HWIO, NHWC), stride-1 convolutions on explicitly padded /
zero-upsampled / transposed arrays, behind optimisation barriers so that XLA cannot fold
the transposes back into the convolutions.

JAX cannot give one function both a custom VJP and a forward-mode rule, so the derivative
rule is part of the layer's configuration, the ``conv_autodiff`` attribute (models pass
theirs down to every ``Conv``; :func:`with_conv_autodiff` sets it on a whole model):

* ``"lax"`` (default): ``lax.conv_general_dilated``; every transformation works (jvp, vjp,
  jacfwd, hessians). Used by kernels, NADs and everything outside the training loop.
* ``"vjp"``: a ``jax.custom_vjp`` convolution with a hand-written backward pass. Reverse
  mode only (``jax.jvp`` raises). Used to train networks.
* ``"linearized"``: a ``jax.custom_jvp`` convolution whose tangent is computed with the
  ``"vjp"`` convolution, so ``grad`` of a ``jvp`` (training f_lin, docs/methods.md §1.5) is fast. It
  supports ``jvp`` and reverse mode *of* a ``jvp`` but not plain ``grad``.

Being a module attribute, the rule is part of the module's identity: two models that differ
only in it are unequal, so every cache keyed on the module (``jax.jit`` static arguments,
the training engine's compiled epochs) compiles one program per rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

CONV_MODES = ("lax", "vjp", "linearized")
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def check_conv_mode(mode: str) -> str:
    """``mode`` if it is one of ``CONV_MODES``, else a ValueError naming them."""
    if mode not in CONV_MODES:
        raise ValueError(f"Unknown conv autodiff mode {mode!r}. Valid modes: {CONV_MODES}.")
    return mode


def with_conv_autodiff(module: nn.Module, mode: str) -> nn.Module:
    """``module`` with its convolutions differentiated by rule ``mode``.

    Args:
        module: an unbound Flax module; a model whose convolutions follow a
            ``conv_autodiff`` attribute (every built-in model with convolutions).
        mode: ``"lax"``, ``"vjp"`` or ``"linearized"`` (see the module docstring).

    Returns:
        A clone with ``conv_autodiff=mode``, or ``module`` itself when it has no such
        attribute (then its convolutions, if any, use XLA's own derivatives: the same
        numbers, possibly slower under ``lax.scan``).
    """
    check_conv_mode(mode)
    if not hasattr(module, "conv_autodiff") or module.conv_autodiff == mode:
        return module
    return module.clone(conv_autodiff=mode)


# XLA:CPU runs a convolution whose output channels are not a multiple of its float32
# vector width markedly slower: LeNet's first convolution (3 → 6 channels, 1000 CIFAR
# images) took 0.145 s, 0.077 s with the kernel padded to 8 output channels, and the
# outputs were bitwise identical (2-core AMD EPYC, jax 0.10.2; also 128 images: 0.017 →
# 0.010 s). The padded channels are zero kernels, sliced off again.
_CPU_CHANNEL_MULTIPLE = 8


def _conv(x: jax.Array, k: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    out_channels = k.shape[-1]
    pad = -out_channels % _CPU_CHANNEL_MULTIPLE
    if pad and jax.default_backend() == "cpu":
        k = jnp.pad(k, ((0, 0), (0, 0), (0, 0), (0, pad)))
        y = lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=_DIMENSION_NUMBERS)
        return y[..., :out_channels]
    return lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=_DIMENSION_NUMBERS)


def _upsample_to_stride_one(g: jax.Array, strides, stride_one_hw) -> jax.Array:
    """Places a strided output's cotangent (B, Ho, Wo, O) on the stride-1 output grid.

    A strided convolution is the stride-1 convolution sampled every ``s`` pixels, so its
    cotangent on the stride-1 grid is ``g`` with ``s - 1`` zeros between entries.
    """
    if tuple(strides) == (1, 1):
        return g
    (sh, sw), (h1, w1) = strides, stride_one_hw
    _, ho, wo, _ = g.shape
    config = [
        (0, 0, 0),
        (0, h1 - ((ho - 1) * sh + 1), sh - 1),
        (0, w1 - ((wo - 1) * sw + 1), sw - 1),
        (0, 0, 0),
    ]
    return lax.pad(g, jnp.zeros((), g.dtype), config)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_fast_vjp(x: jax.Array, k: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """Convolution (B,H,W,C) * (kh,kw,C,O) -> (B,Ho,Wo,O) with a forward-form VJP.

    Args:
        x: input (B, H, W, C).
        k: kernel (kh, kw, C, O).
        strides: (sh, sw).
        pads: explicit non-negative padding ((lo_h, hi_h), (lo_w, hi_w)).
    """
    return _conv(x, k, strides, pads)


def _conv_fast_fwd(x, k, strides, pads):
    return _conv(x, k, strides, pads), (x, k)


def _conv_fast_bwd(strides, pads, residuals, g):
    x, k = residuals
    kh, kw = k.shape[0], k.shape[1]
    (plh, phh), (plw, phw) = pads
    h, w = x.shape[1], x.shape[2]
    hp, wp = h + plh + phh, w + plw + phw
    g1 = _upsample_to_stride_one(g, strides, (hp - kh + 1, wp - kw + 1))
    # Both gradients are canonical NHWC/HWIO/NHWC convolutions of physically transposed
    # operands. The optimisation barriers stop XLA from folding the transposes (and the
    # kernel flip) back into the convolution's dimension numbers: inside a while loop
    # (lax.scan) XLA:CPU does not re-canonicalise such a convolution and runs it with a
    # slow generic loop (measured 5-8x slower per convolution, jax 0.10.2).
    # Input gradient: correlation of g1 with the flipped, in/out-swapped kernel. The "full"
    # correlation (padding kh - 1) spans the padded input frame; padding it by
    # kh - 1 - pad instead yields the unpadded input directly (cropping where negative).
    k_flip = lax.optimization_barrier(jnp.swapaxes(k[::-1, ::-1], 2, 3))
    lo_h, hi_h, lo_w, hi_w = kh - 1 - plh, kh - 1 - phh, kw - 1 - plw, kw - 1 - phw
    dx = _conv(
        g1,
        k_flip,
        (1, 1),
        ((max(lo_h, 0), max(hi_h, 0)), (max(lo_w, 0), max(hi_w, 0))),
    )
    dx = dx[:, max(-lo_h, 0) : max(-lo_h, 0) + h, max(-lo_w, 0) : max(-lo_w, 0) + w, :]
    # Kernel gradient: a correlation of the input with g1 in which the input channels play
    # the role of the batch and the batch the role of input features:
    # (C, H, W, B) * (Ho1, Wo1, B, O) -> (C, kh, kw, O), with the layer's padding.
    xt = lax.optimization_barrier(jnp.transpose(x, (3, 1, 2, 0)))
    gt = lax.optimization_barrier(jnp.transpose(g1, (1, 2, 0, 3)))
    dk = jnp.transpose(_conv(xt, gt, (1, 1), pads), (1, 2, 0, 3))
    return dx, dk.astype(k.dtype)


conv_fast_vjp.defvjp(_conv_fast_fwd, _conv_fast_bwd)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv_linearized(x: jax.Array, k: jax.Array, strides: tuple[int, int], pads) -> jax.Array:
    """Convolution whose tangent uses ``conv_fast_vjp`` (fast reverse mode of a ``jvp``).

    Shapes as in :func:`conv_fast_vjp`.
    """
    return _conv(x, k, strides, pads)


def _conv_linearized_jvp(strides, pads, primals, tangents):
    x, k = primals
    dx, dk = tangents
    out = _conv(x, k, strides, pads)
    # Symbolic zeros skip a whole convolution, e.g. for the (constant) data input.
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(conv_fast_vjp(dx, k, strides, pads))
    if not isinstance(dk, SymbolicZero):
        terms.append(conv_fast_vjp(x, dk, strides, pads))
    if not terms:
        return out, jnp.zeros_like(out)
    tangent = terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return out, tangent


conv_linearized.defjvp(_conv_linearized_jvp, symbolic_zeros=True)


def _explicit_pads(padding, in_hw, kernel_size, strides) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"Conv padding must be 'SAME', 'VALID' or pairs; got {padding!r}.")
        pads = lax.padtype_to_pads(in_hw, kernel_size, strides, padding.upper())
    elif isinstance(padding, int):
        pads = [(padding, padding)] * 2
    else:
        pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    if len(pads) != 2 or min(min(p) for p in pads) < 0:
        raise ValueError(f"Conv needs two non-negative (lo, hi) padding pairs; got {padding!r}.")
    return pads


class Conv(nn.Module):
    """2-D convolution, drop-in for ``flax.linen.Conv`` (same parameters and initialisers).

    Attributes:
        features: output channels O.
        kernel_size: (kh, kw).
        strides: (sh, sw) or an int.
        padding: ``"SAME"``, ``"VALID"``, an int, or ((lo, hi), (lo, hi)).
        use_bias: whether to add a ``bias`` (O,).
        conv_autodiff: the derivative rule, one of ``CONV_MODES`` (module docstring).
    """

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: str | int | Sequence = "SAME"
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    conv_autodiff: str = "lax"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, H, W, C) -> (B, Ho, Wo, features)."""
        if x.ndim != 4:
            raise ValueError(f"Conv expects inputs of shape (B, H, W, C); got {x.shape}.")
        kernel_size = tuple(int(v) for v in self.kernel_size)
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else self.strides
        strides = tuple(int(v) for v in strides)
        kernel = self.param(
            "kernel", self.kernel_init, (*kernel_size, x.shape[-1], self.features), jnp.float32
        )
        pads = _explicit_pads(self.padding, x.shape[1:3], kernel_size, strides)
        # Same dtype promotion as flax.linen.Conv (float64 under x64 references).
        dtype = jnp.result_type(x, kernel)
        x, kernel = jnp.asarray(x, dtype), jnp.asarray(kernel, dtype)
        mode = check_conv_mode(self.conv_autodiff)
        if mode == "vjp":
            y = conv_fast_vjp(x, kernel, strides, pads)
        elif mode == "linearized":
            y = conv_linearized(x, kernel, strides, pads)
        else:
            y = _conv(x, kernel, strides, pads)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + jnp.asarray(bias, dtype)
        return y
