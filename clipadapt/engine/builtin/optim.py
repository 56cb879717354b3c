"""Optimizers and LR schedulers with Dassl's names, defaults and warmup semantics."""
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]
AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]


def build_optimizer(model_or_params, optim_cfg, param_groups=None):
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise ValueError(f'OPTIM.NAME "{name}" is not supported; choose one of {AVAI_OPTIMS}')
    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    if param_groups is not None:
        params = param_groups
    elif isinstance(model_or_params, nn.Module):
        if optim_cfg.STAGED_LR:
            new_layers = list(optim_cfg.NEW_LAYERS)
            base, new = [], []
            for pname, module in model_or_params.named_children():
                (new if pname in new_layers else base).extend(module.parameters())
            params = [{"params": base, "lr": lr * optim_cfg.BASE_LR_MULT}, {"params": new}]
        else:
            params = model_or_params.parameters()
    else:
        params = model_or_params
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    eps = optim_cfg.get("EPS", 1e-8)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, eps=eps)
    if name == "amsgrad":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, eps=eps, amsgrad=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, weight_decay=wd, betas=betas, eps=eps)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas, eps=eps)


class _WarmupScheduler(LRScheduler):
    """Runs `warmup_epoch` epochs at the warmup LR, then hands over to `successor`.

    Dassl's semantics: the successor is stepped only after the warmup, so with one warmup epoch the
    second epoch runs at the base LR and the successor continues from t=1 after it. Unlike Dassl's,
    the state dict holds the successor's state (plain numbers), never the object, so checkpoints
    load with weights_only=True.
    """

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def warmup_lr(self):
        raise NotImplementedError

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return self.warmup_lr()

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step()
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step()

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        self.successor.load_state_dict(state_dict.pop("successor"))
        self.__dict__.update(state_dict)


class ConstantWarmupScheduler(_WarmupScheduler):
    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self):
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_WarmupScheduler):
    def __init__(self, optimizer, successor, warmup_epoch, min_lr, last_epoch=-1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self):
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def build_lr_scheduler(optimizer, optim_cfg):
    name = optim_cfg.LR_SCHEDULER
    if name not in AVAI_SCHEDS:
        raise ValueError(f'OPTIM.LR_SCHEDULER "{name}" is not supported; choose one of {AVAI_SCHEDS}')
    stepsize, max_epoch = optim_cfg.STEPSIZE, optim_cfg.MAX_EPOCH
    if name == "single_step":
        step = stepsize[-1] if isinstance(stepsize, (list, tuple)) else stepsize
        if step <= 0:
            step = max_epoch
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=optim_cfg.GAMMA)
    elif name == "multi_step":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize), gamma=optim_cfg.GAMMA)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=float(max_epoch))

    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
        if optim_cfg.WARMUP_TYPE == "constant":
            scheduler = ConstantWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
        elif optim_cfg.WARMUP_TYPE == "linear":
            scheduler = LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)
        else:
            raise ValueError(f'OPTIM.WARMUP_TYPE "{optim_cfg.WARMUP_TYPE}" is not supported; use "constant" or "linear"')
    return scheduler
