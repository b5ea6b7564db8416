"""Models: the paper's Inception-ResNet CNN (flax.nnx)."""
from fer_jax.models.inception_resnet import create_model
from fer_jax.models.inception_resnet import InceptionResNet
from fer_jax.models.inception_resnet import param_count
from fer_jax.models.inception_resnet import preprocess

__all__ = ["create_model", "InceptionResNet", "param_count", "preprocess"]
