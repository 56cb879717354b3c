"""Hand-crafted prompt templates per dataset (CoOp's CUSTOM_TEMPLATES), keyed by DATASET.NAME."""

CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
    "Shapes": "a photo of a {}.",
}
DEFAULT_TEMPLATE = "a photo of a {}."

# The 7 templates CoOp's ZeroshotCLIP2 ensembles (on every dataset but ImageNet with the dataset's own
# template added as an eighth; trainers/zsclip.py ENSEMBLE), and SHIP on ImageNet.
IMAGENET_TEMPLATES_SELECT = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]


def template_for(dataset_name):
    return CUSTOM_TEMPLATES.get(dataset_name, DEFAULT_TEMPLATE)


def prompts_for(classnames, dataset_name, template=""):
    template = template or template_for(dataset_name)
    return [template.format(name.replace("_", " ")) for name in classnames]
