"""Dassl's default config (the keys CLIP trainers use, with Dassl's default values).

Method keys are not here: each trainer adds its own node (`ClipTrainer.add_config`, filled by the
trainer's `config_defaults`), so a config carries only the keys of the method that runs.
"""
from yacs.config import CfgNode as CN

_C = CN()
_C.VERSION = 1
_C.OUTPUT_DIR = "./output"
_C.RESUME = ""
_C.SEED = -1
_C.USE_CUDA = True
_C.VERBOSE = True

_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bilinear"
_C.INPUT.TRANSFORMS = ()
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2
_C.INPUT.GB_P = 0.5
_C.INPUT.GB_K = 21

_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
_C.DATASET.NUM_SHOTS = -1
_C.DATASET.VAL_PERCENT = 0.1
# CoCoOp's base-to-new protocol: "all", "base", "new"; "gzsl" trains on base and tests on all.
_C.DATASET.SUBSAMPLE_CLASSES = "all"
# Unreadable images: raise (default) or skip them with a printed count.
_C.DATASET.SKIP_UNREADABLE = False
# Hash the images a run uses against the dataset folder's MANIFEST.sha256 (sha256sum format), when present.
_C.DATASET.VERIFY_MANIFEST = False

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.K_TRANSFORMS = 1
_C.DATALOADER.RETURN_IMG0 = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
# CoOp names ("ViT-B/16", "RN50"), open_clip names ("ViT-B-16"), built-in names or a checkpoint path.
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.PRETRAINED = True
# open_clip pretrained tag; "" = the OpenAI weights for CoOp names, the built-in weights otherwise.
_C.MODEL.BACKBONE.PRETRAINED_TAG = ""
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0
# Cut prompts to the longest EOT position + 1 before the text transformer (same features, less work).
_C.MODEL.CUT_TEXT_TOKENS = True
# torch.compile the frozen image encoder for feature extraction (GPU; off by default).
_C.MODEL.COMPILE_IMAGE_ENCODER = False
# A trained run's output folder (and epoch) whose models this run starts from: SHIP's per-target
# cross-dataset fine-tuning. Only trainers with STARTS_FROM_RUN accept it.
_C.MODEL.INIT_RUN = ""
_C.MODEL.INIT_RUN_EPOCH = 0  # 0 = the run's last epoch

_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.EPS = 1e-8
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
_C.OPTIM.WARMUP_EPOCH = -1
_C.OPTIM.WARMUP_TYPE = "linear"
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
_C.OPTIM.WARMUP_RECOUNT = True

_C.TRAIN = CN()
_C.TRAIN.CHECKPOINT_FREQ = 0
_C.TRAIN.PRINT_FREQ = 10
_C.TRAIN.COUNT_ITER = "train_x"

_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
_C.TEST.SPLIT = "test"
_C.TEST.FINAL_MODEL = "last_step"

# Frozen image-encoder features, cached on disk and shared by every method, seed and checkpoint.
_C.FEATURES = CN()
_C.FEATURES.CACHE = True
_C.FEATURES.CACHE_DIR = ""  # "" = $CLIPADAPT_CACHE/features or ~/.cache/clipadapt/features
# Augmented training views: one per epoch by default (-1); N > 0 cycles N views.
_C.FEATURES.TRAIN_VIEWS = -1

_C.TRAINER = CN()
_C.TRAINER.NAME = ""


def get_cfg_default():
    return _C.clone()
