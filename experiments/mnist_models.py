"""The four MNIST models of Table 1, as Keras models.

Architecture of the authors' ``odenet_mnist`` example: downsample
twice, then six pre-activation residual blocks (ResNet), one ODEBlock (ODE-Net) or
the same ODE function backpropagated through an in-graph RK4 integrator (RK-Net),
then GroupNorm, ReLU, global average pooling and a dense layer; and the 784-300-10
MLP. Downsampling "res" (two stride-2 residual blocks) gives the paper's 0.60 M for
the ResNet; "conv" (two 4x4 stride-2 convolutions) is the lighter variant.
"""

from __future__ import annotations

import keras

from tfode.layers import ConvODEFunc, ODEBlock, group_norm

MODELS = ("odenet", "resnet", "rknet", "mlp")
#: Table 1 of the paper: test error (%) and parameters (millions).
PAPER_TABLE1 = {
    "mlp": {"error": 1.60, "params_m": 0.24, "memory": "-", "time": "-"},
    "resnet": {"error": 0.41, "params_m": 0.60, "memory": "O(L)", "time": "O(L)"},
    "rknet": {"error": 0.47, "params_m": 0.22, "memory": "O(L~)", "time": "O(L~)"},
    "odenet": {"error": 0.42, "params_m": 0.22, "memory": "O(1)", "time": "O(L~)"},
}


@keras.saving.register_keras_serializable(package="tfode_experiments")
class ResBlock(keras.layers.Layer):
    """Pre-activation residual block: GN, ReLU, conv3x3 (stride), GN, ReLU, conv3x3,
    plus the shortcut (a 1x1 stride-2 convolution of the activated input when
    downsampling). Convolutions have no bias, as in the reference code."""

    def __init__(self, channels: int = 64, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.stride = channels, stride
        self.norm1, self.norm2 = group_norm(channels), group_norm(channels)
        self.conv1 = keras.layers.Conv2D(channels, 3, strides=stride, padding="same",
                                         use_bias=False)
        self.conv2 = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)
        self.down = (keras.layers.Conv2D(channels, 1, strides=stride, use_bias=False)
                     if stride != 1 else None)

    def build(self, input_shape):
        self.norm1.build(input_shape)
        if self.down is not None:
            self.down.build(input_shape)
        self.conv1.build(input_shape)
        out = self.conv1.compute_output_shape(input_shape)
        self.norm2.build(out)
        self.conv2.build(out)
        self.built = True

    def call(self, x):
        out = keras.ops.relu(self.norm1(x))
        shortcut = self.down(out) if self.down is not None else x
        out = self.conv1(out)
        out = self.conv2(keras.ops.relu(self.norm2(out)))
        return out + shortcut

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "stride": self.stride}


def downsampling(kind: str, channels: int = 64) -> list:
    """The two downsampling stems of the reference code (28x28 -> 7x7 or 6x6)."""
    if kind == "res":
        return [keras.layers.Conv2D(channels, 3), ResBlock(channels, 2), ResBlock(channels, 2)]
    if kind == "conv":
        return [keras.layers.Conv2D(channels, 3), group_norm(channels), keras.layers.ReLU(),
                keras.layers.ZeroPadding2D(1), keras.layers.Conv2D(channels, 4, strides=2),
                group_norm(channels), keras.layers.ReLU(),
                keras.layers.ZeroPadding2D(1), keras.layers.Conv2D(channels, 4, strides=2)]
    raise ValueError(f"downsampling must be 'res' or 'conv'; got {kind!r}.")


def head(channels: int = 64) -> list:
    return [group_norm(channels), keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10)]


def build_model(name: str, *, downsampling_kind: str = "res", method: str = "adams",
                tol: float = 1e-3, rk_steps: int = 2, blocks: int = 6, t_end: float = 1.0,
                seed: int = 0, regularizers: dict | None = None) -> keras.Model:
    """One of :data:`MODELS`; logits out.

    Args:
        name: ``odenet``, ``resnet``, ``rknet`` or ``mlp``.
        downsampling_kind: ``res`` or ``conv``.
        method, tol: The ODE-Net's solver and rtol = atol (the paper: Adams, 1e-3).
        rk_steps: RK4 steps of the RK-Net over [0, t_end] (4 evaluations each).
        blocks: Residual blocks of the ResNet (the paper: 6).
        t_end: Integration time of the ODE-Net and RK-Net (the paper: 1).
        seed: Weight initialisation seed.
        regularizers: ODE-Net only: ``kinetic``, ``jacobian_norm`` and ``steer`` of
            :class:`tfode.layers.ODEBlock` (none by default, as in the paper).
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    if name == "mlp":
        layers = [keras.layers.Flatten(), keras.layers.Dense(300, activation="relu"),
                  keras.layers.Dense(10)]
    elif name == "resnet":
        layers = [*downsampling(downsampling_kind), *[ResBlock(64) for _ in range(blocks)],
                  *head()]
    elif name in ("odenet", "rknet"):
        if name == "odenet":
            block = ODEBlock(ConvODEFunc(64), t=(0.0, t_end), method=method, rtol=tol,
                             atol=tol, name="ode_block", **(regularizers or {}))
        else:
            block = ODEBlock(ConvODEFunc(64), t=(0.0, t_end), method="rk4",
                             options={"num_steps": rk_steps}, name="ode_block")
        layers = [*downsampling(downsampling_kind), block, *head()]
    else:
        raise ValueError(f"Unknown model {name!r}; choose from {', '.join(MODELS)}.")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def ode_block(model: keras.Model):
    """The model's ODEBlock, or None."""
    for layer in model.layers:
        if isinstance(layer, ODEBlock):
            return layer
    return None
