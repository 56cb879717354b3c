"""CLIP-Adapter (Gao et al., IJCV 2024, arXiv 2110.04544): a bottleneck MLP on CLIP's features,
blended residually with the frozen features; CLIP stays frozen and only the adapter trains.

    f' = alpha * A_v(f) + (1 - alpha) * f            (visual adapter, alpha = RATIO)
    W' = beta  * A_t(W) + (1 - beta)  * W            (optional text adapter, beta = TEXT_RATIO)
    logits = logit_scale * cos(f', W')

The paper's option of learning alpha and beta per dataset with a small hyper-network is
LEARN_RATIO (RatioNet): (alpha, beta) = sigmoid(MLP(dataset descriptor)), the descriptor being
the normalised mean of the class-prompt text features (docs/CLIPAdapter.md says what the paper leaves
open and what we chose).

W holds the text features of one hand-crafted prompt per class (CoOp's per-dataset template),
computed once. The modules (Adapter, RatioNet, AdaptedClassifier) live in clipadapt/adapters.py,
shared with SHIP's CLIP-Adapter stage 2.
"""
import torch
import torch.nn.functional as F

from clipadapt.adapters import AdaptedClassifier
from clipadapt.engine import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer
from clipadapt.trainer import ClipTrainer


# ----- trainer -----------------------------------------------------------------------------------
@TRAINER_REGISTRY.register()
class CLIPAdapter(ClipTrainer):
    CONFIG_NODE = "CLIP_ADAPTER"

    @staticmethod
    def config_defaults(node):
        node.RATIO = 0.2  # alpha: the released code's value (paper: ~0.2 generic, ~0.6 fine-grained)
        node.REDUCTION = 4  # bottleneck D -> D/4 (paper and released code)
        node.FINAL_RELU = True  # ReLU after the second layer, as in the released code
        node.VISUAL_ADAPTER = True  # A_v on image features (paper's default variant)
        node.TEXT_ADAPTER = False  # A_t on the classifier weights (paper's variants)
        node.TEXT_RATIO = 0.2  # beta
        node.LEARN_RATIO = False  # the paper's option: alpha, beta from a hyper-network (RatioNet), per dataset;
        #                           RATIO / TEXT_RATIO are then its starting values
        node.RATIO_REDUCTION = 4  # RatioNet's hidden width D / 4 (ours: the paper gives no size)
        node.PREC = "fp32"  # frozen CLIP's precision: the released code runs clip_model.float(); adapter is fp32
        node.TEMPLATE = ""  # "" = the dataset's CoOp template

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.CLIP_ADAPTER
        if not (node.VISUAL_ADAPTER or node.TEXT_ADAPTER):
            raise ValueError("TRAINER.CLIP_ADAPTER: VISUAL_ADAPTER and TEXT_ADAPTER are both False: nothing to train")
        for key in ("RATIO", "TEXT_RATIO"):
            if not 0.0 <= node[key] <= 1.0:
                raise ValueError(f"TRAINER.CLIP_ADAPTER.{key} = {node[key]} must lie in [0, 1]")
            if node.LEARN_RATIO and not 0.0 < node[key] < 1.0:
                raise ValueError(f"TRAINER.CLIP_ADAPTER.{key} = {node[key]}: with LEARN_RATIO it is the learned "
                                 "ratio's starting value and must lie strictly between 0 and 1")
        if node.RATIO_REDUCTION < 1:
            raise ValueError(f"TRAINER.CLIP_ADAPTER.RATIO_REDUCTION = {node.RATIO_REDUCTION} must be >= 1")
        if node.REDUCTION < 1:
            raise ValueError(f"TRAINER.CLIP_ADAPTER.REDUCTION = {node.REDUCTION} must be >= 1")

    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        dim = self.embed_dim
        self.classifier = AdaptedClassifier(
            dim, ratio=node.RATIO, reduction=node.REDUCTION, final_relu=node.FINAL_RELU,
            visual=node.VISUAL_ADAPTER, text=node.TEXT_ADAPTER, text_ratio=node.TEXT_RATIO,
            learn_ratio=node.LEARN_RATIO, ratio_reduction=node.RATIO_REDUCTION,
        ).to(self.device)  # float32 whatever PREC: features are cast to float32 before it
        self.load_init_weights(self.classifier, "classifier")
        n_params = sum(p.numel() for p in self.classifier.parameters())
        print(f"CLIP-Adapter: D = {dim}, {n_params:,} trainable parameters ({self.classifier.extra_repr()})")
        self.train_text_weights = self.text_weights(self.train_classnames)
        self.optim = build_optimizer(self.classifier, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("clip_adapter", self.classifier, self.optim, self.sched)

    def text_weights(self, classnames):
        """W: (n_cls, D) unit-norm features of the hand-crafted prompts, encoded once per class list."""
        return self.prompt_weights(classnames, self.method_cfg.TEMPLATE)

    def forward_backward(self, batch):
        image_features, label = self.parse_batch_train(batch)
        output = self.classifier(image_features, self.train_text_weights, self.logit_scale)  # (B, n_cls)
        loss = F.cross_entropy(output, label)
        return self.finish_step(loss, output, label)

    @torch.no_grad()
    def prepare_eval(self):
        # The text adapter and the ratios are fixed during evaluation: compute them once for the test classes.
        text_weights = self.text_weights(self.classnames)
        self.eval_ratio, text_ratio = self.classifier.ratios(text_weights)
        self.eval_text_embedding = self.classifier.text_embedding(text_weights, text_ratio)
        if self.classifier.ratio_net is not None:
            print(f"Learned ratios for these {len(self.classnames)} classes: alpha = {float(self.eval_ratio):.4f}, "
                  f"beta = {float(text_ratio):.4f}" + ("" if self.classifier.text is not None else " (unused: no text adapter)"))

    def model_inference(self, image_features):
        image = self.classifier.image_embedding(image_features, self.eval_ratio)
        return self.logit_scale * image @ self.eval_text_embedding.t()
