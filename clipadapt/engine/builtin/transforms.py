"""Dassl's image transforms for CLIP training: random_resized_crop, random_flip, normalize, and the
test-time short-edge resize + center crop."""
from torchvision.transforms import (CenterCrop, Compose, InterpolationMode, Normalize, RandomCrop,
                                    RandomHorizontalFlip, RandomResizedCrop, Resize, ToTensor)

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}
AVAI_CHOICES = ["random_flip", "random_resized_crop", "normalize", "random_crop", "center_crop"]


def build_transform(cfg, is_train=True, choices=None):
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    choices = list(cfg.INPUT.TRANSFORMS if choices is None else choices)
    for choice in choices:
        if choice not in AVAI_CHOICES:
            raise ValueError(f'INPUT.TRANSFORMS has "{choice}"; supported: {AVAI_CHOICES}')
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise ValueError(f'INPUT.INTERPOLATION "{cfg.INPUT.INTERPOLATION}" must be one of {list(INTERPOLATION_MODES)}')
    size = tuple(cfg.INPUT.SIZE)
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    normalize = Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    tfm = []
    if is_train:
        print("Building transform_train")
        if "random_crop" not in choices and "random_resized_crop" not in choices:
            print(f"+ resize to {size}")
            tfm.append(Resize(size, interpolation=interp))
        if "random_crop" in choices:
            print(f"+ random crop (padding = {cfg.INPUT.CROP_PADDING})")
            tfm.append(RandomCrop(size, padding=cfg.INPUT.CROP_PADDING))
        if "random_resized_crop" in choices:
            print(f"+ random resized crop (size={size}, scale={tuple(cfg.INPUT.RRCROP_SCALE)})")
            tfm.append(RandomResizedCrop(size, scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interp))
        if "random_flip" in choices:
            print("+ random flip")
            tfm.append(RandomHorizontalFlip())
    else:
        print("Building transform_test")
        print(f"+ resize the smaller edge to {max(size)}")
        tfm.append(Resize(max(size), interpolation=interp))
        print(f"+ {size} center crop")
        tfm.append(CenterCrop(size))
    print("+ to torch tensor of range [0, 1]")
    tfm.append(ToTensor())
    if "normalize" in choices:
        print(f"+ normalization (mean={list(cfg.INPUT.PIXEL_MEAN)}, std={list(cfg.INPUT.PIXEL_STD)})")
        tfm.append(normalize)
    return Compose(tfm)
