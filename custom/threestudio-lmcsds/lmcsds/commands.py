"""The command registry: every ``python -m lmcsds.X`` entry point is also ``lmcsds <command>``.

Each module below defines ``add_arguments(parser)`` and ``run(args)``; its ``main(argv)`` (the
``python -m`` entry point) and the ``lmcsds`` subcommand are both built from them, so the two
take the same flags and print the same help, every flag with its default.
"""

import argparse
import importlib
import sys
from typing import Callable, List, Optional, Tuple

# (subcommand, module, one-line help), in the order ``lmcsds --help`` lists them
COMMANDS: List[Tuple[str, str, str]] = [
    ("compare", "lmcsds.evaluation.compare", "text-to-3D: built-in SDS vs LMC-SDS through launch.py"),
    ("bench3d", "lmcsds.evaluation.bench3d", "text-to-3D against ground truth (procedural objects)"),
    ("term-bias", "lmcsds.evaluation.term_bias",
     "mean push of g_cond / g_proj / g_lmc on an object's renders"),
    ("detail-diagnosis", "lmcsds.evaluation.detail_diagnosis",
     "what one guidance step does to an object's pattern and parts, per t"),
    ("experiments", "lmcsds.evaluation.experiments", "the paper's 2D synthesis and editing"),
    ("demo", "lmcsds.evaluation.demo", "a 2D SDS vs LMC-SDS run on the bundled prior (minutes)"),
    ("bench-guidance", "lmcsds.bench.guidance",
     "guidance step time and FLOPs: built-in SDS vs LMC-SDS"),
    ("bench-step3d", "lmcsds.bench.step3d",
     "time per launch.py step on the CPU config, variants side by side"),
    ("bench-training", "lmcsds.bench.training",
     "corrective training throughput: data, prior passes, steps"),
    ("gpu-check", "lmcsds.bench.gpu_check",
     "IF-I-XL guidance step eager vs compiled, triplets/s, corrective steps/s on a GPU"),
    ("train-prior", "lmcsds.priors.train", "train an offline IF-shaped prior (resumable)"),
    ("eval-prior", "lmcsds.priors.objects_eval",
     "prompt faithfulness and sample grids of the procedural-object prior"),
    ("train-objects-classifier", "lmcsds.priors.objects_classifier",
     "train the procedural-object classifier (shape, colour, pattern, view)"),
    ("export-objects", "lmcsds.priors.objects_data", "write procedural-object renders as PNGs"),
    ("train-fmnist-classifier", "lmcsds.priors.fmnist_classifier",
     "train the Fashion-MNIST metric classifier"),
    ("export-fmnist", "lmcsds.priors.fmnist_data", "write Fashion-MNIST images as PNGs"),
    ("check-corrective", "lmcsds.evaluation.check_corrective",
     "acceptance check of a corrective: short 3D runs, pass / warn / fail"),
    ("fit-spectral-corrective", "lmcsds.training.spectral",
     "closed-form per-t Fourier filter corrective (a negative control)"),
    ("train-translator", "lmcsds.evaluation.translation",
     "the paper's translation network (Sec. 5.2) on objects with exact targets"),
    ("asset-density", "lmcsds.evaluation.asset_density",
     "density field of a finished threestudio run on a grid (.npz)"),
    ("tet-grids", "lmcsds.adapter.tet_grid",
     "write threestudio's load/tets/<N>_tets.npz DMTet grids (no quartet)"),
    ("bench-rasterizer", "lmcsds.bench.rasterizer",
     "CPU rasteriser time per render on DMTet meshes of the refine stage"),
]  # fmt: skip


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every flag's default; no "(default: None)" for flags without one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def command_parser(description: Optional[str], add_arguments: Callable) -> argparse.ArgumentParser:
    """A parser for one command: ``description`` is the module docstring (first paragraph)."""
    first = (description or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(description=first, formatter_class=HelpFormatter)
    add_arguments(parser)
    return parser


def module_main(module_doc: Optional[str], add_arguments: Callable, run: Callable, argv=None):
    """The body of a module's ``main(argv)``: parse ``argv`` with its flags and run it."""
    return run(command_parser(module_doc, add_arguments).parse_args(argv))


def add_subcommand(sub: argparse._SubParsersAction, name: str, help_text: str):
    """One ``lmcsds`` subcommand's parser, showing every flag's default."""
    return sub.add_parser(
        name, help=help_text, description=help_text, formatter_class=HelpFormatter
    )


# the pip extra that provides each optional package (setup.py's extras_require)
EXTRA_OF = {
    "lightning_fabric": "train",
    "tensorboard": "train",
    "matplotlib": "eval",
    "imageio": "eval",
    "omegaconf": "eval",
    "skimage": "eval",
    "scipy": "eval",
    "accelerate": "eval",
    "threestudio": None,  # not pip-installable: a threestudio checkout (README)
    "pytorch_lightning": None,
}


def missing_extra_message(command: str, error: ModuleNotFoundError) -> str:
    """One line naming the missing package and how to install it."""
    package = (error.name or "").split(".")[0]
    extra = EXTRA_OF.get(package, "all")
    if package in EXTRA_OF and extra is None:
        return (
            f"lmcsds {command} needs threestudio ({error}): run it inside a threestudio "
            f"environment (README: set-up)"
        )
    return (
        f"lmcsds {command} needs {package or error} ({error}): "
        f"pip install 'threestudio-lmcsds[{extra}]'"
    )


def _unavailable(command: str, error: ModuleNotFoundError) -> Callable:
    def run(args) -> None:
        print(missing_extra_message(command, error), file=sys.stderr)
        sys.exit(2)

    return run


def register(sub: argparse._SubParsersAction) -> None:
    """Add every registered module as a subcommand of ``lmcsds``; a module whose optional
    packages are not installed still appears, and says which extra to install when run."""
    for name, module_name, help_text in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            p = add_subcommand(sub, name, f"{help_text} [not installed: {e.name}]")
            p.set_defaults(func=_unavailable(name, e), unavailable=True)  # any flags accepted
            continue
        p = add_subcommand(sub, name, help_text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
