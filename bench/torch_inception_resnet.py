"""The fer_jax Inception-ResNet in PyTorch (NCHW), block for block, for bench/backbone.py only.

Same blocks and channel counts as fer_jax/models/inception_resnet.py: bias-free convs, each followed by
BatchNorm (eps 1e-3, momentum 0.1 = flax 0.9) and ReLU, except the residual up-projection's BN.
"""
import torch
from torch import nn
import torch.nn.functional as F


class ConvBN(nn.Module):

  def __init__(self, c_in, c_out, kernel, stride=1, padding="SAME", relu=True):
    super().__init__()
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    pad = (kernel[0] // 2, kernel[1] // 2) if padding == "SAME" else 0  # SAME convs have stride 1.
    self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
    self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.1)
    self.relu = relu
    self.out_channels = c_out

  def forward(self, x):
    x = self.bn(self.conv(x))
    return F.relu(x) if self.relu else x


class Chain(nn.Sequential):

  def __init__(self, c_in, specs):
    layers = []
    for c_out, kernel, stride, padding in specs:
      layers.append(ConvBN(c_in, c_out, kernel, stride, padding))
      c_in = c_out
    super().__init__(*layers)
    self.out_channels = c_in


def _pool(x):
  return F.max_pool2d(x, 3, 2)


class Stem(nn.Module):

  def __init__(self, ch):
    super().__init__()
    self.convs = Chain(3, [(ch(32), 3, 2, "VALID"), (ch(32), 3, 1, "VALID"), (ch(64), 3, 1, "SAME")])
    c = self.convs.out_channels
    self.mixed_3a = ConvBN(c, ch(96), 3, 2, "VALID")
    c += ch(96)
    self.mixed_4a_0 = Chain(c, [(ch(64), 1, 1, "SAME"), (ch(96), 3, 1, "VALID")])
    self.mixed_4a_1 = Chain(c, [(ch(64), 1, 1, "SAME"), (ch(64), (7, 1), 1, "SAME"),
                                (ch(64), (1, 7), 1, "SAME"), (ch(96), 3, 1, "VALID")])
    c = 2 * ch(96)
    self.mixed_5a = ConvBN(c, ch(192), 3, 2, "VALID")
    self.out_channels = c + ch(192)

  def forward(self, x):
    x = self.convs(x)
    x = torch.cat([_pool(x), self.mixed_3a(x)], 1)
    x = torch.cat([self.mixed_4a_0(x), self.mixed_4a_1(x)], 1)
    return torch.cat([self.mixed_5a(x), _pool(x)], 1)


class Residual(nn.Module):

  def __init__(self, c, branches, scale):
    super().__init__()
    self.branches = nn.ModuleList([Chain(c, s) for s in branches])
    self.up = ConvBN(sum(b.out_channels for b in self.branches), c, 1, relu=False)
    self.scale = scale

  def forward(self, x):
    return F.relu(x + self.scale * self.up(torch.cat([b(x) for b in self.branches], 1)))


class Reduction(nn.Module):

  def __init__(self, c, branches):
    super().__init__()
    self.branches = nn.ModuleList([Chain(c, s) for s in branches])
    self.out_channels = c + sum(b.out_channels for b in self.branches)

  def forward(self, x):
    return torch.cat([_pool(x)] + [b(x) for b in self.branches], 1)


class InceptionResNet(nn.Module):
  """images [B, 3, S, S] -> logits [B, num_classes]."""

  def __init__(self, num_classes, width=1.0, repeats=(1, 1, 1), fc1_width=1024, dropout=0.2):
    super().__init__()
    ch = lambda c: max(1, int(round(c * width)))  # noqa: E731
    s = "SAME"
    self.stem = Stem(ch)
    c = self.stem.out_channels
    a = [[(ch(32), 1, 1, s)], [(ch(32), 1, 1, s), (ch(32), 3, 1, s)],
         [(ch(32), 1, 1, s), (ch(48), 3, 1, s), (ch(64), 3, 1, s)]]
    self.blocks_a = nn.Sequential(*[Residual(c, a, 0.17) for _ in range(repeats[0])])
    self.reduction_a = Reduction(c, [[(ch(384), 3, 2, "VALID")], [
        (ch(256), 1, 1, s), (ch(256), 3, 1, s), (ch(384), 3, 2, "VALID")]])
    c = self.reduction_a.out_channels
    b = [[(ch(192), 1, 1, s)], [(ch(128), 1, 1, s), (ch(160), (1, 7), 1, s), (ch(192), (7, 1), 1, s)]]
    self.blocks_b = nn.Sequential(*[Residual(c, b, 0.10) for _ in range(repeats[1])])
    self.reduction_b = Reduction(c, [
        [(ch(256), 1, 1, s), (ch(384), 3, 2, "VALID")], [(ch(256), 1, 1, s), (ch(288), 3, 2, "VALID")],
        [(ch(256), 1, 1, s), (ch(288), 3, 1, s), (ch(320), 3, 2, "VALID")]])
    c = self.reduction_b.out_channels
    cc = [[(ch(192), 1, 1, s)], [(ch(192), 1, 1, s), (ch(224), (1, 3), 1, s), (ch(256), (3, 1), 1, s)]]
    self.blocks_c = nn.Sequential(*[Residual(c, cc, 0.20) for _ in range(repeats[2])])
    self.dropout = nn.Dropout(dropout)
    self.fc1 = nn.Linear(c, fc1_width)
    self.fc2 = nn.Linear(fc1_width, num_classes)

  def forward(self, x):
    x = self.blocks_a(self.stem(x))
    x = self.blocks_c(self.reduction_b(self.blocks_b(self.reduction_a(x))))
    x = self.dropout(x.mean((2, 3)))
    return self.fc2(F.relu(self.fc1(x)))
