"""KgCoOp (Yao, Zhang, Xu, CVPR 2023): CoOp with its learned class text features kept near CLIP's
hand-crafted ones.

As the released `KgCoOp/trainers/kgcoop.py`: loss = CE + W * score, score = 1 - mean_c cos(w_c, w_clip_c),
with w the normalised text features of the learned prompts and w_clip those of the dataset's template
("a centered satellite photo of {}." on EuroSAT) for the training classes. The released code loads a
second CLIP onto the GPU for w_clip (over 24 GB on ImageNet); here it is the frozen CLIP already
loaded, encoded once. Evaluation is CoOp's. The config node is the released one, TRAINER.COOP, with W.
"""
import torch.nn.functional as F

from clipadapt.engine import TRAINER_REGISTRY

from .coop import CoOp

# Parameters the released prompt learner defines but never uses (frozen dead code): dropped when a
# released checkpoint is loaded.
RELEASED_UNUSED = ("bias_vectors", "meta_net.linear1.weight", "meta_net.linear1.bias")


def knowledge_guided_score(text_features, hand_crafted):
    """1 - mean_c cos(w_c, w_clip_c): the released `score` (CosineSimilarity, eps 1e-7)."""
    return 1.0 - F.cosine_similarity(text_features, hand_crafted.to(text_features.dtype), dim=1, eps=1e-7).mean()


@TRAINER_REGISTRY.register()
class KgCoOp(CoOp):
    CONFIG_NODE = "COOP"

    @staticmethod
    def config_defaults(node):
        CoOp.config_defaults(node)
        node.W = 8.0  # weight of the knowledge-guided score (the paper's lambda; released scripts pass 8.0)

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.COOP.W < 0:
            raise ValueError(f"TRAINER.COOP.W is {cfg.TRAINER.COOP.W}; the score's weight must be >= 0")

    def hand_crafted_features(self):
        """w_clip of the training classes, in the head's dtype (fp16 under PREC fp16, as released)."""
        return self.prompt_weights(self.train_classnames).to(self.head_dtype)

    def forward_backward(self, batch):
        image_features, label = self.parse_batch_train(batch)
        with self.autocast():
            text_features = self.text_features()
            output = self.logits(image_features, text_features)
            score = knowledge_guided_score(text_features, self.hand_crafted_features())
            ce = F.cross_entropy(output, label)
            loss = ce + self.method_cfg.W * score
        return self.finish_step(loss, output, label, ce=ce, score=score)

    def load_state_into(self, name, state_dict, fpath):
        state_dict = {k: v for k, v in state_dict.items() if k not in RELEASED_UNUSED}
        super().load_state_into(name, state_dict, fpath)
