"""The package's own CIFAR-10 VGG16 at the default profile's size (3/8 width, Table 3's model; the ATTA weights
ship as ``weights/cifar10-vgg16-<pooling>-atta-seed<k>.safetensors``), written as a user would bring it: a factory
that returns the network, for ``08_your_model -p model notebooks/examples/cifar10_vgg16.py:vgg16_max``."""
from interpretgan.models import VGG16


def vgg16_max():
    """VGG16 with batch norm, max pooling, channels x 3/8: 3 x 32 x 32 images in [0, 1] -> 10 logits."""
    return VGG16(pooling="max", width=0.375)


def vgg16_avg():
    """The same with average pooling."""
    return VGG16(pooling="avg", width=0.375)
