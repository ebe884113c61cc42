"""Loads an hf_lottery_verify sparse ResNet with plain torch, timm and transformers (no hf_lottery_verify).

Shipped beside the weights so that, without the library,
``AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True)``,
``AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)`` and
``pipeline("image-classification", model=repo, trust_remote_code=True)`` work. With
``import hf_lottery_verify`` the library's own classes are used and this file is not run.
The pruned weights are stored as zeros, so the dense network computes the ticket.
"""

import numpy as np
import timm
import torch.nn.functional as F
from PIL import Image
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_transforms import to_pil_image
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

# CIFAR ResNets: a 3x3 stride-1 stem, no max-pool; names ending in "_a" use parameter-free
# option-A shortcuts (subsample, zero-pad planes // 4 channels on each side).
CIFAR = {"cifar_resnet8": (BasicBlock, (1, 1, 1)), "cifar_resnet20": (BasicBlock, (3, 3, 3)),
         "cifar_resnet32": (BasicBlock, (5, 5, 5)), "cifar_resnet56": (BasicBlock, (9, 9, 9)),
         "cifar_resnet18": (BasicBlock, (2, 2, 2, 2)), "cifar_resnet50": (Bottleneck, (3, 4, 6, 3))}


class ZeroPadShortcut(nn.Module):
    def __init__(self, pad, stride):
        super().__init__()
        self.pad, self.stride = pad, stride

    def forward(self, x):
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))


def build_resnet(arch, num_classes, in_chans, model_args):
    args = {k: v for k, v in (model_args or {}).items() if k not in ("num_classes", "in_chans")}
    base = arch.split(".")[0]
    if base.removesuffix("_a") not in CIFAR:
        return timm.create_model(base, pretrained=False, num_classes=num_classes, in_chans=in_chans, **args)
    block, layers = CIFAR[base.removesuffix("_a")]
    channels = tuple(args.pop("channels", None) or ((16, 32, 64) if len(layers) == 3 else (64, 128, 256, 512)))
    args.pop("stem_width", None)
    net = ResNet(block, layers, channels=channels, num_classes=num_classes, in_chans=in_chans, stem_type="deep",
                 stem_width=channels[0] // 2, **args)
    net.conv1 = nn.Conv2d(in_chans, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    if len(layers) == 3:
        net.layer4 = nn.Identity()
    if base.endswith("_a"):
        for i, planes in enumerate(channels):
            first = getattr(net, f"layer{i + 1}")[0]
            if first.downsample is not None:
                first.downsample = ZeroPadShortcut(planes // 4, first.stride)
    return net


class SparseResNetConfig(PretrainedConfig):
    model_type = "sparse_resnet"
    arch: str = "cifar_resnet20"
    in_chans: int = 3
    image_size: int = 32
    model_args: dict | None = None
    image_mean: list | None = None
    image_std: list | None = None
    density: float | None = None


class SparseResNetForImageClassification(PreTrainedModel):
    config_class = SparseResNetConfig
    base_model_prefix = "timm_model"
    main_input_name = "pixel_values"

    def __init__(self, config):
        super().__init__(config)
        self.timm_model = build_resnet(config.arch, config.num_labels, config.in_chans, config.model_args)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, pixel_values, labels=None, **kwargs):
        logits = self.timm_model(pixel_values)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits)


class SparseResNetImageProcessor(BaseImageProcessor):
    """Grayscale or RGB (PIL's conversion), a bilinear resize to the trained size, then (pixel - 255 * mean) /
    (255 * std) per channel in float32: hf_lottery_verify's own evaluation, bit for bit."""

    model_input_names = ["pixel_values"]

    def __init__(self, in_chans=3, image_size=32, image_mean=None, image_std=None, **kwargs):
        super().__init__()  # a folder's config.json read as processor config brings the model's fields too
        self.in_chans, self.image_size = int(in_chans), int(image_size)
        self.image_mean, self.image_std = list(image_mean), list(image_std)

    def preprocess(self, images, return_tensors=None, **kwargs):
        arrays = []
        for image in images if isinstance(images, (list, tuple)) else [images]:
            image = to_pil_image(image).convert("L" if self.in_chans == 1 else "RGB")
            if image.size != (self.image_size, self.image_size):
                image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(image, dtype=np.uint8).reshape(image.size[1], image.size[0], -1))
        mean = np.asarray(self.image_mean, dtype=np.float32) * 255
        std = np.asarray(self.image_std, dtype=np.float32) * 255
        pixels = ((np.stack(arrays) - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)
        return BatchFeature({"pixel_values": pixels}, tensor_type=return_tensors)
