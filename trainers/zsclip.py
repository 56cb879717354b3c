"""ZeroshotCLIP (Radford et al., 2021): a hand-crafted prompt per class, no training."""
from clipadapt.clip import IMAGENET_TEMPLATES_SELECT, prompts_for, template_for
from clipadapt.engine import TRAINER_REGISTRY
from clipadapt.trainer import ClipTrainer


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(ClipTrainer):
    CONFIG_NODE = "ZSCLIP"
    LEARNS = False

    @staticmethod
    def config_defaults(node):
        node.PREC = "fp16"
        node.TEMPLATE = ""  # "" = the dataset's CoOp template
        node.ENSEMBLE = False  # True = CoOp's ZeroshotCLIP2: average the 7 ImageNet templates + the dataset's own

    def build_model(self):
        self.load_clip()
        self.text_features = self.classifier_weights(self.classnames)  # (n_cls, D), unit norm

    def classifier_weights(self, classnames):
        """(n_cls, D) unit-norm class weights in the head's dtype: fp16 under PREC fp16 on a GPU, where
        CoOp's ZeroshotCLIP normalises (and ZeroshotCLIP2 sums) its fp16 text features in fp16."""
        node = self.method_cfg
        if node.ENSEMBLE:
            templates = list(IMAGENET_TEMPLATES_SELECT)
            if self.cfg.DATASET.NAME != "ImageNet":  # as CoOp's ZeroshotCLIP2: every other dataset adds its own
                templates.append(node.TEMPLATE or template_for(self.cfg.DATASET.NAME))
            return self.ensemble_weights(classnames, templates, self.head_dtype)
        prompts = prompts_for(classnames, self.cfg.DATASET.NAME, node.TEMPLATE)
        print(f"Prompts: {prompts[:3]}{' ...' if len(prompts) > 3 else ''}")
        return self.encode_texts(prompts, self.head_dtype)

    def model_inference(self, image_features):
        image_features = self.normalize(image_features.to(self.text_features.dtype))
        return self.logit_scale * image_features @ self.text_features.t()

    def train(self):
        raise RuntimeError("ZeroshotCLIP has nothing to train; run it with --eval-only.")


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """CoOp's name for the prompt ensemble: ZeroshotCLIP with TRAINER.ZSCLIP.ENSEMBLE True."""

    @staticmethod
    def config_defaults(node):
        ZeroshotCLIP.config_defaults(node)
        node.ENSEMBLE = True
