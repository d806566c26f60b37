"""Models behind one seam: ``forward(x) -> logits``, ``embed(x) -> [B, D]``, ``head: nn.Linear``.

Build them by name with `build`; importing this package registers every built-in model (in the
order below, which is the order `list_models` reports).
"""

from thresher.models.base import Classifier, WrappedClassifier
from thresher.models.registry import ModelInfo, build, list_models, model_options, register_model

from thresher.models.mlp import MLP  # isort: skip
from thresher.models.cnn import SimpleCNN  # isort: skip
from thresher.models.resnet import CifarResNet  # isort: skip
from thresher.models.resnet18 import ResNet18  # isort: skip
from thresher.models.vgg import VGG  # isort: skip
from thresher.models.vit import VisionTransformer  # isort: skip
from thresher.models.airbench import Airbench94  # isort: skip
from thresher.models.autoencoder import ConvAutoencoder  # isort: skip
from thresher.models.vae import ConvVAE  # isort: skip

__all__ = [
    "Classifier", "WrappedClassifier", "ModelInfo", "build", "list_models", "model_options",
    "register_model", "MLP", "SimpleCNN", "CifarResNet", "ResNet18", "VGG", "VisionTransformer",
    "Airbench94", "ConvAutoencoder", "ConvVAE",
]
