"""DeepPromptTrainer: what MaPLe and IVLP share, so their trainer files hold only their prompts.

The trainer's `prompt_learner` is a clipadapt.clip.PromptLearner (the text input prompts) with a
`deep_prompts()` giving (vision input prompts or None, text prompts per layer, vision prompts per
layer) for clipadapt.clip.deep_prompts. Both encoders run prompted: images in every batch (no feature
cache), logits = scale * cos(image, text), cross-entropy, text features once per evaluation.
"""
import torch.nn.functional as F

from .clip import DeepPromptError, check_prompted_vision, encode_image_prompted
from .trainer import ClipTrainer


class DeepPromptTrainer(ClipTrainer):
    PROMPTS_IMAGE_ENCODER = True
    MODEL_NAME = "prompt_learner"  # the registered model (and checkpoint folder) name

    def check_depth(self, key, depth, encoders=("text", "vision")):
        """Refuse a prompt depth the backbone's encoders do not have; a ResNet image encoder in one line."""
        if "vision" in encoders:
            check_prompted_vision(self.clip_model.visual)
        layers = {"text": len(self.clip_model.transformer.resblocks)}
        if "vision" in encoders:
            layers["vision"] = len(self.clip_model.visual.transformer.resblocks)
        fewest = min(layers[e] for e in encoders)
        if depth > fewest:
            raise DeepPromptError(f"TRAINER.{self.CONFIG_NODE}.{key} {depth} exceeds the {fewest} layers of "
                                  f"{self.cfg.MODEL.BACKBONE.NAME}")

    def register_prompt_learner(self, learner):
        from .engine import build_lr_scheduler, build_optimizer
        self.prompt_learner = learner
        self.load_init_weights(learner, self.MODEL_NAME)
        self.optim = build_optimizer(learner, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model(self.MODEL_NAME, learner, self.optim, self.sched)

    def text_features(self, text_deep):
        prompts, tokenized = self.prompt_learner()
        return self.normalize(self.text_encoder(prompts, tokenized, text_deep).to(self.head_dtype))

    def image_features(self, images, first, vision_deep):
        visual = self.clip_model.visual
        if first is None and all(p is None for p in vision_deep):  # language-only prompting: CLIP's own encoder
            return self.normalize(visual(images).to(self.head_dtype))
        return self.normalize(encode_image_prompted(visual, images, first, vision_deep).to(self.head_dtype))

    def features(self, images):
        """(unit image features (B, D), unit text features (n_cls, D)) through the prompted encoders."""
        first, text_deep, vision_deep = self.prompt_learner.deep_prompts()
        return self.image_features(images, first, vision_deep), self.text_features(text_deep)

    def before_epoch(self):
        self.prompt_learner.set_classnames(self.train_classnames)

    def forward_backward(self, batch):
        images, label = self.parse_batch_train(batch)
        with self.autocast():
            image, text = self.features(images)
            output = self.logit_scale * image @ text.t()
            loss = F.cross_entropy(output, label)
        return self.finish_step(loss, output, label)

    def prepare_eval(self):
        self.prompt_learner.set_classnames(self.classnames)
        first, text_deep, vision_deep = self.prompt_learner.deep_prompts()
        self._eval_vision_prompts = (first, vision_deep)
        self.eval_text_features = self.text_features(text_deep)

    def model_inference(self, images):
        return self.logit_scale * self.image_features(images, *self._eval_vision_prompts) @ self.eval_text_features.t()

    def released_state(self, state_dict):
        """A released checkpoint's state in this learner's names (the released trainers save the whole
        CustomCLIP, frozen CLIP included): subclasses translate."""
        return state_dict

    def load_state_into(self, name, state_dict, fpath):
        super().load_state_into(name, self.released_state(state_dict), fpath)
