from setuptools import find_packages, setup

setup(
    name="clipadapt",
    version="0.1.0",
    description="CLIP adaptation that keeps zero-shot power: ZeroshotCLIP, CoOp, CLIP-Adapter, SHIP and PVA "
                "as Dassl trainers",
    python_requires=">=3.10",
    packages=find_packages(include=["clipadapt", "clipadapt.*"]),
    package_data={"clipadapt": ["clip/model_configs/*.json", "world/model_configs/*.json",
                                "world/weights/*.pt", "world/weights/*.json"]},
    install_requires=[
        # torch/torchvision: any CUDA or CPU build >= 2.1 works; we test on 2.14.1 / 0.29.1.
        "torch>=2.1",
        "torchvision>=0.16",
        "open_clip_torch>=2.24",
        "yacs",
        "PyYAML",
        "tabulate",
        "tqdm",
        "numpy",
        "Pillow",
        "tensorboard",  # the engine's scalars (OUTPUT_DIR/tensorboard), as Dassl writes them
        "submitit",  # the Slurm launcher of clipadapt.sweep
        "scikit-learn",  # LinearProbeCLIP's solver: every registered trainer works after the install
        "scipy",  # the GZSL benchmarks' .mat split files
    ],
    # openai-clip: OpenAI's own CLIP code, the reference of tests/test_openai_parity.py (its clip/model.py
    # and simple_tokenizer.py are loaded by file; ftfy and regex are what the tokenizer imports).
    extras_require={"test": ["pytest", "openai-clip", "ftfy", "regex", "matplotlib"], "plot": ["matplotlib"]},
)
