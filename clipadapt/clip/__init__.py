"""CLIP backend: loading (open_clip), the cut text encoder, prompt construction, deep prompts and templates."""
from .deep_prompts import DeepPromptError, check_prompted_vision, clone_linear, encode_image_prompted, vision_width
from .loader import (COOP_NAMES, MODEL_CONFIG_DIR, PRECISIONS, BackboneSpec, build_clip, check_input_config,
                     compute_dtype, embed_dim, input_size, load_clip, load_clip_from_cfg, precision_dtype,
                     precision_key, register_model_configs, resolve_backbone, state_dict_digest)
from .prompts import PromptLearner
from .templates import CUSTOM_TEMPLATES, IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT, prompts_for, template_for
from .text import TextEncoder
from .weights import BackboneError
