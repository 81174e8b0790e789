"""Flexible K→N modality translation for medical image synthesis: one model turns any subset of a patient's MRI contrasts into any subset of the missing ones

Modules:

- `med_k2n.cli`: One entry point, `med-k2n`, with a subcommand per job (`phantom`, `prepare`, `train`, `synth`, `eval`, `demo`…). Each subcommand is a plain Python function in the module that owns the job; this module only dispatches to it, builds its parser with `fastcore.script`, and turns user errors into one-line messages.
- `med_k2n.core`: The vocabulary every other module speaks: canonical modality names and their aliases, the modality sets of the public datasets, and K→N tasks (which modalities are inputs, which are targets)."""

__version__ = "0.0.1"
