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
    install_requires=[
        "torch>=2.0",
        "diffusers>=0.19,<0.20",
        "safetensors",
        "numpy",
        "tqdm",
    ],
    entry_points={"console_scripts": ["lmcsds=lmcsds.cli:main"]},
)
