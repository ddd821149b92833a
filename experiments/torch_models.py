"""PyTorch twins of tfode's models and weight transfer between Keras and PyTorch.

Needs the optional ``compare`` extra (``pip install -e ".[compare]"``: torch and
torchdiffeq). Two models have twins, written as in the torchdiffeq examples:

* the spiral MLP of ``ode_demo`` and benchmark B1, ``f(y) = Dense(2)(tanh(Dense(50)(y^3)))``
  (Keras: ``experiments.ode_demo.build_model``);
* the MNIST ODE function (Keras: ``tfode.layers.ConvODEFunc``): GroupNorm, ReLU,
  ConcatConv2d, GroupNorm, ReLU, ConcatConv2d, GroupNorm, where torchdiffeq's
  ConcatConv2d puts time as the *first* input channel (NCHW) and tfode's
  ConcatConv2D as the *last* (NHWC): the transfer permutes the kernel accordingly;
* the latent ODE of Table 2 (Keras: ``tfode.latent.LatentODE``): a tanh RNN read
  backward over ``[x_i, t_i - t_{i-1}]`` (torch's two RNN biases: Keras's bias and
  zero), the ``q(z0)`` head, the ELU dynamics and ReLU decoder MLPs, the ELBO with
  one solve for the batch at the union of its times.

``keras_to_torch(keras_obj, torch_module)`` and ``torch_to_keras(torch_module,
keras_obj)`` copy every weight; both raise a ValueError naming the pair whose shapes
do not match.
"""

from __future__ import annotations

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "experiments.torch_models needs PyTorch: pip install -e '.[compare]' "
        "(torch and torchdiffeq).") from err


class SpiralMLP(nn.Module):
    """``f(t, y) = Linear(50 -> 2)(tanh(Linear(2 -> 50)(y^3)))``."""

    def __init__(self, hidden: int = 50, dim: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t, y):
        return self.net(y ** 3)


class ConcatConv2d(nn.Module):
    """torchdiffeq's ConcatConv2d: ``conv(cat([t, x], 1))``."""

    def __init__(self, dim_in: int, dim_out: int, ksize: int = 3, padding: int = 1):
        super().__init__()
        self.layer = nn.Conv2d(dim_in + 1, dim_out, ksize, padding=padding)

    def forward(self, t, x):
        tt = torch.ones_like(x[:, :1]) * t
        return self.layer(torch.cat([tt, x], 1))


class ConvODEFunc(nn.Module):
    """The odenet_mnist ODE function (channels first)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        groups = min(32, channels)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = nn.GroupNorm(groups, channels)

    def forward(self, t, x):
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class Counted(nn.Module):
    """Wraps a dynamics module and counts its evaluations (``self.nfe``)."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func, self.nfe = func, 0

    def forward(self, t, y):
        self.nfe += 1
        return self.func(t, y)


class LatentODE(nn.Module):
    """``tfode.latent.LatentODE`` (Gaussian observations, no intensity) in PyTorch."""

    def __init__(self, obs_dim: int = 2, latent_dim: int = 4, rnn_units: int = 25,
                 dynamics_units: int = 20, decoder_units: int = 20, obs_std: float = 0.3,
                 t0: float = 0.0):
        super().__init__()
        self.obs_std, self.t0 = float(obs_std), float(t0)
        self.rnn = nn.RNN(obs_dim + 1, rnn_units, batch_first=True, nonlinearity="tanh")
        self.head = nn.Linear(rnn_units, 2 * latent_dim)
        self.dynamics = nn.Sequential(nn.Linear(latent_dim, dynamics_units), nn.ELU(),
                                      nn.Linear(dynamics_units, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, decoder_units), nn.ReLU(),
                                     nn.Linear(decoder_units, obs_dim))
        self.nfe = 0

    def forward(self, t, z):  # the latent dynamics, counted
        self.nfe += 1
        return self.dynamics(z)

    def elbo(self, x, t, eps, solve, **solver):
        """The ELBO of each sequence for observations ``x`` ``[B, n, D]`` at times ``t``
        ``[B, n]``, with the reparameterisation noise ``eps`` ``[B, latent]``;
        ``solve`` is ``torchdiffeq.odeint`` or ``odeint_adjoint``."""
        previous = torch.cat([torch.full_like(t[:, :1], self.t0), t[:, :-1]], 1)
        inputs = torch.cat([x, (t - previous)[..., None]], -1).flip(1)
        _, h = self.rnn(inputs)
        mean, logvar = self.head(h[0]).chunk(2, -1)
        z0 = mean + torch.exp(0.5 * logvar) * eps
        grid = torch.unique(torch.cat([t.new_tensor([self.t0]), t.reshape(-1)]))
        zs = solve(self, z0, grid, **solver)  # [T, B, latent]
        index = torch.searchsorted(grid, t.contiguous())
        z = zs[index, torch.arange(t.shape[0])[:, None]]
        std = self.obs_std
        logp = -0.5 * (np.log(2 * np.pi) + 2 * np.log(std) + ((x - self.decoder(z)) / std) ** 2)
        kl = 0.5 * torch.sum(torch.exp(logvar) + mean ** 2 - 1.0 - logvar, -1)
        return logp.sum((-1, -2)) - kl


# -- weight transfer -----------------------------------------------------------------
def _pairs(keras_obj, torch_module):
    """(keras variables, torch parameters, kind) for each corresponding layer."""
    from tfode.layers import ConvODEFunc as KerasConvODEFunc

    if isinstance(torch_module, SpiralMLP):
        dense = [layer for layer in getattr(keras_obj, "layers", []) if hasattr(layer, "kernel")]
        linear = [m for m in torch_module.net if isinstance(m, nn.Linear)]
        if len(dense) != len(linear):
            raise ValueError(f"The Keras model has {len(dense)} Dense layers and the torch "
                             f"SpiralMLP {len(linear)} Linear layers; they must match.")
        return [((d.kernel, d.bias), (lin.weight, lin.bias), "dense")
                for d, lin in zip(dense, linear)]
    if isinstance(torch_module, ConvODEFunc):
        if not isinstance(keras_obj, KerasConvODEFunc):
            raise TypeError(f"A torch ConvODEFunc pairs with tfode.layers.ConvODEFunc; got "
                            f"{type(keras_obj).__name__}.")
        k, m = keras_obj, torch_module
        pairs = [((n.gamma, n.beta), (tn.weight, tn.bias), "norm")
                 for n, tn in ((k.norm1, m.norm1), (k.norm2, m.norm2), (k.norm3, m.norm3))]
        pairs += [((c.conv.kernel, c.conv.bias), (tc.layer.weight, tc.layer.bias), "concat_conv")
                  for c, tc in ((k.conv1, m.conv1), (k.conv2, m.conv2))]
        return pairs
    if isinstance(torch_module, LatentODE):
        k, m = keras_obj, torch_module
        cell = k.encoder.rnn.cell
        zero = _Zeros(m.rnn.bias_hh_l0.shape)  # torch's second RNN bias; Keras has one
        pairs = [((cell.kernel, cell.bias), (m.rnn.weight_ih_l0, m.rnn.bias_ih_l0), "dense"),
                 ((cell.recurrent_kernel, zero), (m.rnn.weight_hh_l0, m.rnn.bias_hh_l0),
                  "dense"),
                 ((k.encoder.head.kernel, k.encoder.head.bias), (m.head.weight, m.head.bias),
                  "dense")]
        for mlp, seq in ((k.dynamics, m.dynamics), (k.decoder, m.decoder)):
            pairs += [((d.kernel, d.bias), (lin.weight, lin.bias), "dense")
                      for d, lin in ((mlp.inner, seq[0]), (mlp.outer, seq[2]))]
        return pairs
    raise TypeError(f"No weight transfer for {type(torch_module).__name__}; supported: "
                    "SpiralMLP, ConvODEFunc, LatentODE.")


class _Zeros:
    """A fixed zero array standing in for a Keras variable (torch's extra RNN bias)."""

    def __init__(self, shape):
        self.shape, self.path = tuple(shape), "(zero bias)"

    def numpy(self):
        return np.zeros(self.shape)

    def assign(self, value):
        if np.any(value):
            raise ValueError("torch's hidden-to-hidden RNN bias has no Keras counterpart: it "
                             "must be zero to copy the RNN to Keras.")


def _to_torch_layout(kind: str, kernel: np.ndarray) -> np.ndarray:
    if kind == "dense":  # [in, out] -> [out, in]
        return kernel.T
    if kind == "concat_conv":  # [kh, kw, C + time, out] -> [out, time + C, kh, kw]
        kernel = np.concatenate([kernel[:, :, -1:], kernel[:, :, :-1]], 2)
        return kernel.transpose(3, 2, 0, 1)
    return kernel


def _to_keras_layout(kind: str, weight: np.ndarray) -> np.ndarray:
    if kind == "dense":
        return weight.T
    if kind == "concat_conv":
        kernel = weight.transpose(2, 3, 1, 0)
        return np.concatenate([kernel[:, :, 1:], kernel[:, :, :1]], 2)
    return weight


def keras_to_torch(keras_obj, torch_module: nn.Module) -> nn.Module:
    """Copies the weights of a Keras model/layer into its torch twin; returns the twin."""
    with torch.no_grad():
        for kvars, tparams, kind in _pairs(keras_obj, torch_module):
            for i, (kv, tp) in enumerate(zip(kvars, tparams)):
                value = np.asarray(kv.numpy())
                value = _to_torch_layout(kind, value) if i == 0 else value
                if tuple(value.shape) != tuple(tp.shape):
                    raise ValueError(f"Shape mismatch in a {kind} layer: Keras {kv.path} gives "
                                     f"{value.shape}, torch expects {tuple(tp.shape)}.")
                tp.copy_(torch.as_tensor(value, dtype=tp.dtype))
    return torch_module


def torch_gradients_as_keras(torch_module: nn.Module, keras_obj) -> list[np.ndarray]:
    """The ``.grad`` of the twin's parameters as arrays shaped and ordered like the Keras
    object's trainable variables (torch's extra RNN bias, with the same gradient as the
    other, is left out)."""
    by_path = {}
    for kvars, tparams, kind in _pairs(keras_obj, torch_module):
        for i, (kv, tp) in enumerate(zip(kvars, tparams)):
            if isinstance(kv, _Zeros):
                continue
            grad = tp.grad.detach().cpu().numpy()
            by_path[kv.path] = _to_keras_layout(kind, grad) if i == 0 else grad
    return [by_path[v.path] for v in keras_obj.trainable_variables]


def torch_to_keras(torch_module: nn.Module, keras_obj):
    """Copies the weights of a torch twin into the Keras model/layer; returns it."""
    for kvars, tparams, kind in _pairs(keras_obj, torch_module):
        for i, (kv, tp) in enumerate(zip(kvars, tparams)):
            value = tp.detach().cpu().numpy()
            value = _to_keras_layout(kind, value) if i == 0 else value
            if tuple(value.shape) != tuple(kv.shape):
                raise ValueError(f"Shape mismatch in a {kind} layer: torch gives {value.shape}, "
                                 f"Keras {kv.path} expects {tuple(kv.shape)}.")
            kv.assign(value.astype(kv.dtype))
    return keras_obj
