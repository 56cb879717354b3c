"""DataManager, DatasetWrapper and data loaders with Dassl's names and printed summary."""
import torch
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from ...loading import drop_unreadable, read_image
from .transforms import build_transform


class DatasetWrapper(Dataset):
    """Yields Dassl's batch dict: img, label, domain, impath, index."""

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img = read_image(item.impath)
        output["img"] = self.transform(img) if self.transform is not None else img
        return output


def build_data_loader(cfg, sampler_type="SequentialSampler", data_source=None, batch_size=64, tfm=None,
                      is_train=True, dataset_wrapper=None, generator=None, drop_last=None):
    if dataset_wrapper is None:
        dataset_wrapper = DatasetWrapper
    dataset = dataset_wrapper(cfg, data_source, transform=tfm, is_train=is_train)
    if sampler_type == "RandomSampler":
        sampler = RandomSampler(dataset, generator=generator)
    elif sampler_type == "SequentialSampler":
        sampler = SequentialSampler(dataset)
    else:
        raise ValueError(f'Sampler "{sampler_type}" is not supported; use RandomSampler or SequentialSampler')
    num_workers = cfg.DATALOADER.NUM_WORKERS
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        # Dassl's rule unless the caller says (SHIP's released loaders keep the last partial batch).
        drop_last=(is_train and len(data_source) >= batch_size) if drop_last is None else drop_last,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
        persistent_workers=num_workers > 0,
    )
    if len(loader) == 0:
        raise ValueError(f"The data loader is empty: {len(data_source)} items with batch size {batch_size}")
    return loader


class DataManager:
    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        from .. import build_dataset  # the engine's registry (built-in or Dassl's)

        dataset = build_dataset(cfg)
        if cfg.DATASET.get("SKIP_UNREADABLE", False):
            dataset._train_x = drop_unreadable(dataset.train_x, "train_x")
            if dataset.val:
                dataset._val = drop_unreadable(dataset.val, "val")
            dataset._test = drop_unreadable(dataset.test, "test")
        tfm_train = custom_tfm_train or build_transform(cfg, is_train=True)
        tfm_test = custom_tfm_test or build_transform(cfg, is_train=False)
        self.tfm_train, self.tfm_test = tfm_train, tfm_test

        self.train_loader_x = build_data_loader(
            cfg, sampler_type=cfg.DATALOADER.TRAIN_X.SAMPLER, data_source=dataset.train_x,
            batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, tfm=tfm_train, is_train=True,
            dataset_wrapper=dataset_wrapper)
        self.train_loader_u = None
        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=dataset.val,
                batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
                dataset_wrapper=dataset_wrapper)
        self.test_loader = build_data_loader(
            cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=dataset.test,
            batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
            dataset_wrapper=dataset_wrapper)

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    num_classes = property(lambda self: self._num_classes)
    num_source_domains = property(lambda self: self._num_source_domains)
    lab2cname = property(lambda self: self._lab2cname)

    def show_dataset_summary(self, cfg):
        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))
