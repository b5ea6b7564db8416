"""A tiny stand-in for the Inception-ResNet, shared by the trainer tests (test_train, test_joint)."""
from flax import nnx
import jax.numpy as jnp
import pytest

from fer_jax import models


class TinyNet(nnx.Module):
  """Stand-in: images [B, H, W, 3] -> {"logits": [B, C], "features": [B, 16]}."""

  def __init__(self, num_classes, rngs):
    self.conv = nnx.Conv(3, 8, (3, 3), strides=2, use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
    self.dropout = nnx.Dropout(0.3, rngs=rngs)
    self.fc1 = nnx.Linear(8, 16, rngs=rngs)
    self.fc2 = nnx.Linear(16, num_classes, rngs=rngs)

  def __call__(self, images, train=False):
    x = nnx.relu(self.bn(self.conv(images), use_running_average=not train))
    x = self.dropout(jnp.mean(x, axis=(1, 2)), deterministic=not train)
    features = nnx.relu(self.fc1(x))
    return {"logits": self.fc2(features), "features": features}


@pytest.fixture
def tiny_net(monkeypatch):
  """models.create_model builds TinyNet for the test."""
  monkeypatch.setattr(models, "create_model",
                      lambda model_config, num_classes, rngs: TinyNet(num_classes, rngs))
