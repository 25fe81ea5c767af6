"""The article's two-convolution CNN, corrected and configurable, and two one-layer models that
compare a convolution with a fully connected layer.

The article's listings hard-code ``nn.Linear(64 * 16 * 16, 128)`` for 32x32 inputs, but two 2x2
max-pools turn 32x32 into 8x8, so the flatten size is ``64 * 8 * 8``. Here the flatten size is
computed from ``input_size``, so the same network works on 8x8 digits, 28x28 Fashion-MNIST and
32x32 CIFAR-10.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["CNNConfig", "SmallCNN", "build_model", "conv_layer_model", "dense_layer_model"]


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int  # 1 for grayscale, 3 for RGB
    num_classes: int  # size of the output layer
    input_size: tuple[int, int]  # (H, W) of the input images
    width: int = 32  # channels of the first conv; the second has 2 * width (article: 32 -> 64)
    hidden: int = 128  # units of the first fully connected layer (article: 128)
    batch_norm: bool = False  # BatchNorm2d after each conv, before the ReLU
    dropout: float = 0.0  # dropout rate before each fully connected layer (0 disables)
    separable: bool = False  # depthwise-separable second convolution instead of a full one


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    raise ValueError(f"Invalid input_size: {size!r} (an int or an (H, W) pair)")


def _check_config(cfg: CNNConfig) -> None:
    for field_name in ("in_channels", "num_classes", "width", "hidden"):
        value = getattr(cfg, field_name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid {field_name} value: {value!r} (must be a positive int)")
    if cfg.num_classes < 2:
        raise ValueError(f"Invalid num_classes value: {cfg.num_classes} (need at least 2)")
    h, w = cfg.input_size
    if h < 4 or w < 4:
        raise ValueError(
            f"Invalid input_size: {cfg.input_size} (two 2x2 poolings need at least 4x4)"
        )
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"Invalid dropout value: {cfg.dropout} (must be in [0, 1))")


class SmallCNN(nn.Module):
    """conv3x3 -> [BN] -> ReLU -> pool -> conv3x3 -> [BN] -> ReLU -> pool -> FC -> ReLU -> FC
    (computed as pool, then ReLU: the same function, see :meth:`features`).

    Args:
        in_channels: input channels.
        num_classes: number of classes.
        input_size: ``H`` (square) or ``(H, W)``; the flatten size is
            ``2 * width * (H // 4) * (W // 4)``.
        width: channels of the first convolution (the second has twice as many).
        hidden: units of the hidden fully connected layer.
        batch_norm: insert ``nn.BatchNorm2d`` after each convolution (before the ReLU, as in the
            BN paper; the article put it after the ReLU).
        dropout: rate of ``nn.Dropout`` before each fully connected layer.
        separable: make the second convolution depthwise-separable (depthwise 3x3 + pointwise 1x1).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        input_size: int | tuple[int, int],
        width: int = 32,
        hidden: int = 128,
        batch_norm: bool = False,
        dropout: float = 0.0,
        separable: bool = False,
    ) -> None:
        super().__init__()
        cfg = CNNConfig(
            in_channels=in_channels,
            num_classes=num_classes,
            input_size=_pair(input_size),
            width=width,
            hidden=hidden,
            batch_norm=batch_norm,
            dropout=float(dropout),
            separable=separable,
        )
        _check_config(cfg)
        self.config = cfg
        w1, w2 = width, 2 * width
        self.conv1 = nn.Conv2d(in_channels, w1, 3, padding=1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(w1) if batch_norm else nn.Identity()
        if separable:
            self.conv2 = nn.Sequential(
                nn.Conv2d(w1, w1, 3, padding=1, groups=w1, bias=False),  # depthwise
                nn.Conv2d(w1, w2, 1, bias=not batch_norm),  # pointwise
            )
        else:
            self.conv2 = nn.Conv2d(w1, w2, 3, padding=1, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(w2) if batch_norm else nn.Identity()
        # ReLUs as modules (not torch.relu calls), so forward hooks see them
        self.act1, self.act2, self.act3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.MaxPool2d(2, 2)
        h, w = cfg.input_size
        self.flat_features = w2 * (h // 4) * (w // 4)
        self.drop1 = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.fc1 = nn.Linear(self.flat_features, hidden)
        self.drop2 = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(hidden, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The convolutional trunk: ``(B, C, H, W) -> (B, 2*width, H//4, W//4)``."""
        # Pool before the ReLU: max-pooling and ReLU commute (ReLU is monotone), so this is the
        # same function with the same gradients, bit for bit (tests/test_models.py), and the
        # ReLU runs on a quarter of the values: training steps are ~10% faster.
        x = self.act1(self.pool(self.bn1(self.conv1(x))))  # (B, w1, H/2, W/2)
        x = self.act2(self.pool(self.bn2(self.conv2(x))))  # (B, w2, H/4, W/4)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)  # (B, w2 * H/4 * W/4)
        x = self.act3(self.fc1(self.drop1(x)))  # (B, hidden)
        return self.fc2(self.drop2(x))  # (B, num_classes)


def build_model(
    input_shape: tuple[int, int, int], num_classes: int, *, seed: int = 0, **kwargs: object
) -> SmallCNN:
    """Build a :class:`SmallCNN` for images of ``input_shape`` with seeded initial weights.

    The seed is applied inside ``torch.random.fork_rng`` so the caller's global RNG is untouched.
    """
    c, h, w = input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN(c, num_classes, input_size=(h, w), **kwargs)  # type: ignore[arg-type]


def conv_layer_model(input_shape: tuple[int, int, int], num_classes: int, channels: int, *,
                     kernel_size: int = 3, seed: int = 0) -> nn.Module:
    """One convolution (same padding) -> ReLU -> flatten -> linear classifier, with seeded
    initial weights (the caller's global RNG is untouched)."""
    c, h, w = input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(c, channels, kernel_size, padding=kernel_size // 2),  # (B, ch, H, W)
            nn.ReLU(), nn.Flatten(),  # (B, ch*H*W)
            nn.Linear(channels * h * w, num_classes))


def dense_layer_model(input_shape: tuple[int, int, int], num_classes: int, channels: int, *,
                      seed: int = 0) -> nn.Module:
    """The same as :func:`conv_layer_model` with the convolution replaced by a fully connected
    layer of the same input and output sizes (``C*H*W -> channels*H*W``): no sharing."""
    c, h, w = input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(),  # (B, C*H*W)
            nn.Linear(c * h * w, channels * h * w), nn.ReLU(),  # (B, ch*H*W)
            nn.Linear(channels * h * w, num_classes))
