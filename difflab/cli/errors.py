"""Library messages in CLI terms: the Python parameters a message names become the flags.

Library errors name parameters in backticks (`images`, `resume=True`, `method="ode"`) and
library functions as calls (`train_classifier(data, out)`); the CLI prints them with the flags
and commands a shell user types (--image, --resume, --method ode, difflab train-classifier ...).
"""

from __future__ import annotations

import re

FLAGS = {  # library parameter → CLI flag
    "images": "--image",
    "masks": "--mask",
    "aug_level": "--aug-level",
    "classes": "--class",
    "prompts": "--prompt",
    "negative_prompts": "--negative-prompt",
    "allow_pickle": "--allow-pickle",
    "guidance": "--guidance",
    "out": "--out",
    "resume": "--resume",
    "force": "--force",
    "lr": "--lr",
    "method": "--method",
    "probe": "--probe",
    "n": "-n",
    "steps": "--steps",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "sampler": "--sampler",
    "discretization": "--discretization",
    "features": "--features",
    "weights": "--weights",
    "strength": "--strength",
    "mask": "--mask",
    "jump_length": "--jump-length",
    "resample": "--resample",
    "frames": "--frames",
    "scale": "--scale",
    "inner_steps": "--inner-steps",
    "rounds": "--rounds",
    "codec_ckpt": "--codec-ckpt",
    "source": "--from",  # edit textdiff
    "target": "--to",
    "objective": "--objective",
    "metrics": "--metrics",
    "cache": "--cache",
}
COMMANDS = {  # library function → the CLI command that runs it
    "train_classifier": "difflab train-classifier DATA --out FILE",
    "train_encoder": "difflab train-encoder DATA --out FILE",
    "train_clip": "difflab train-clip DATA --out FILE",
    "train_feature_net": "difflab train-features DATA --out FILE",
    "train_autoencoder": "difflab train-autoencoder DATA --out DIR",
    "encode_dataset": "difflab encode DATA --codec-ckpt FILE --out FILE",
    "embedding_cache": "difflab train-prior DATA --clip FILE --out RUN",
}

_PARAM = re.compile(r"`([A-Za-z_]\w*)(?:=([^`]*))?`")  # `name` or `name=value`
_CALL = re.compile(r"`([A-Za-z_]\w*)\([^`]*\)`")  # `function(args)`


def _flag(match: re.Match) -> str:
    name, value = match.group(1), match.group(2)
    if name not in FLAGS or value == "False":
        return match.group(0)
    if value is None or value == "True":
        return FLAGS[name]
    return f"{FLAGS[name]} {value.strip(chr(34) + chr(39))}"


def _command(match: re.Match) -> str:
    name = match.group(1)
    return f"`{COMMANDS[name]}`" if name in COMMANDS else match.group(0)


def cli_message(message: str) -> str:
    """`message` with each backticked known parameter as its flag (`resume=True` → --resume,
    `method="ode"` → --method ode) and each known library call as its command."""
    return _PARAM.sub(_flag, _CALL.sub(_command, message))
