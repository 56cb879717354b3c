"""Image reading with one clear error for an unreadable file, and the index dataset of the trainers
that read image features from the cache; used by either engine's data loaders."""
from PIL import Image
from torch.utils.data import Dataset


class UnreadableImageError(RuntimeError):
    pass


def read_image(path):
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:
        raise UnreadableImageError(
            f'Cannot read image "{path}": {exc}. Replace the file (re-download or re-extract the dataset), or set '
            "DATASET.SKIP_UNREADABLE True to skip unreadable images (their count is printed)."
        ) from exc


def drop_unreadable(items, split_name):
    """Keep the items whose image decodes; print how many were skipped."""
    kept, bad = [], []
    for item in items:
        try:
            with Image.open(item.impath) as img:
                img.convert("RGB")
            kept.append(item)
        except Exception:
            bad.append(item.impath)
    if bad:
        print(f"Skipped {len(bad)} unreadable image(s) in {split_name} (DATASET.SKIP_UNREADABLE), e.g. {bad[0]}")
    return kept


class IndexDataset(Dataset):
    """Labels and indices without images: for trainers that read image features from the cache."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        return {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
