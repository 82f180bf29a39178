from setuptools import find_packages, setup

SRC = "custom/threestudio-lmcsds"

setup(
    name="threestudio-lmcsds",
    version="0.1.0",
    description=(
        "Score Distillation Sampling with Learned Manifold Corrective (LMC-SDS) "
        "for threestudio and DeepFloyd IF"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": SRC},
    packages=find_packages(SRC),
    # the core, the guidance and the `lmcsds` command; tested with threestudio's pins
    # (requirements.txt: diffusers 0.19, transformers 4.28) and with today's releases
    install_requires=[
        "torch>=2.0",
        "diffusers>=0.19",
        "transformers>=4.28",
        "huggingface_hub",
        "sentencepiece",
        "safetensors",
        "numpy",
        "tqdm",
        "Pillow",
    ],
    extras_require={
        # train-corrective, generate-triplets, report-corrective, train-prior
        "train": ["pytorch-lightning>=2.0", "tensorboard", "matplotlib"],  # ships lightning_fabric
        # compare, bench3d, experiments, demo, term-bias, benchmarks
        "eval": ["matplotlib", "imageio", "omegaconf", "scikit-image", "scipy", "accelerate"],
        "dev": ["pytest", "pytest-xdist", "black", "isort"],
    },
    entry_points={"console_scripts": ["lmcsds=lmcsds.cli:main"]},
)
