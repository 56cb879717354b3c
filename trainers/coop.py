"""CoOp (Zhou et al., IJCV 2022): learnable context vectors in the text prompt; CLIP stays frozen."""
import torch.nn.functional as F

from clipadapt.clip import PromptLearner
from clipadapt.engine import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer
from clipadapt.trainer import ClipTrainer


@TRAINER_REGISTRY.register()
class CoOp(ClipTrainer):
    CONFIG_NODE = "COOP"

    @staticmethod
    def config_defaults(node):
        node.N_CTX = 16  # number of context tokens
        node.CSC = False  # class-specific context
        node.CTX_INIT = ""  # e.g. "a photo of a" (then N_CTX = its token count)
        node.PREC = "fp16"  # fp16, fp32, bf16 or amp
        node.CLASS_TOKEN_POSITION = "end"  # end, middle or front

    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        self.prompt_learner = PromptLearner(
            self.text_encoder, self.tokenizer, self.train_classnames, n_ctx=node.N_CTX, ctx_init=node.CTX_INIT,
            csc=node.CSC, position=node.CLASS_TOKEN_POSITION, dtype=self.head_dtype)
        self.load_init_weights(self.prompt_learner, "prompt_learner")
        self.optim = build_optimizer(self.prompt_learner, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("prompt_learner", self.prompt_learner, self.optim, self.sched)

    # The head runs as CoOp's CustomCLIP.forward does, in every PREC: fp16 normalises, multiplies and
    # takes the loss in fp16; amp trains under autocast (fp16 logits, fp32 cross-entropy) and, as
    # Dassl's test does, evaluates without it.
    def text_features(self):
        prompts, tokenized = self.prompt_learner()
        return self.normalize(self.text_encoder(prompts, tokenized).to(self.head_dtype))  # (n_cls, D)

    def logits(self, image_features, text_features):
        return self.logit_scale * self.normalize(image_features.to(text_features.dtype)) @ text_features.t()

    def before_epoch(self):
        self.prompt_learner.set_classnames(self.train_classnames)

    def forward_backward(self, batch):
        image_features, label = self.parse_batch_train(batch)
        with self.autocast():
            output = self.logits(image_features, self.text_features())
            loss = F.cross_entropy(output, label)
        return self.finish_step(loss, output, label)

    def prepare_eval(self):
        self.prompt_learner.set_classnames(self.classnames)
        self.eval_text_features = self.text_features()

    def model_inference(self, image_features):
        return self.logits(image_features, self.eval_text_features)
